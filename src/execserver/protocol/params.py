"""Decode a request's params into its wire struct, failing with the reference's serde text.

msgspec decodes; on failure `compat.serde` words the problem as serde over serde_json's `Value`
would. Pure data: stdlib, msgspec and `compat` only.
"""

from __future__ import annotations

from typing import Any, TypeVar

from execserver.compat import serde
from execserver.protocol.base import dec_hook

__all__ = ["ParamsError", "decode_params", "decode_unit"]

T = TypeVar("T")


class ParamsError(ValueError):
    """Params that do not fit the method's struct; `str(exc)` is serde's message."""


def decode_params(obj: Any, tp: type[T]) -> T:
    """Convert a decoded JSON value into `tp`, raising `ParamsError` with serde's wording.

    `obj` is the already-decoded `params` member (`None` when absent or null).
    """
    try:
        return serde.from_value(obj, tp, serde.JSON_VALUE, dec_hook=dec_hook)
    except serde.SerdeError as exc:
        raise ParamsError(exc.message) from None


def decode_unit(obj: Any) -> None:
    """Check the params of a method whose params type is serde's unit `()`."""
    if obj is None or obj == {}:
        return
    raise ParamsError(f"invalid type: {serde.unexpected(obj)}, expected unit")
