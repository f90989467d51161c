"""Building blocks for wire structs: camelCase structs, Rust integer widths, base64 bytes.

Every payload struct derives from `WireStruct`. `rust_name` is the serde struct name the
reference prints in type errors (`expected struct ReadParams`); `rust_len` its field count and
`rust_defaults` its defaulted members, used for the positional-array errors. Pure data: stdlib,
msgspec and `compat` only.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, TypeVar

import msgspec

from execserver.compat.serde import unexpected, unknown_variant
from execserver.compat.uuid_text import uuid_error
from execserver.protocol import b64
from execserver.protocol.pathuri import PathUri

I64_MAX = 2**63 - 1
T = TypeVar("T")

# Integer widths as serde names them. msgspec cannot bound an int past int64, so u64 and usize
# carry their upper bound (`max`) here: structs with such members call `check_u64()` from
# `__post_init__`, and `compat.serde` words the failure.
U64 = Annotated[int, msgspec.Meta(ge=0, extra={"rust": "u64", "max": 2**64 - 1})]
USIZE = Annotated[int, msgspec.Meta(ge=0, extra={"rust": "usize", "max": 2**64 - 1})]
U32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1, extra={"rust": "u32"})]
U16 = Annotated[int, msgspec.Meta(ge=0, le=2**16 - 1, extra={"rust": "u16"})]
I64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=I64_MAX, extra={"rust": "i64"})]


class WireStruct(msgspec.Struct, rename="camel", kw_only=True):
    """Base of every wire payload: snake_case in Python, camelCase on the wire."""

    rust_name: ClassVar[str] = ""
    rust_len: ClassVar[int] = 0
    rust_defaults: ClassVar[frozenset[str]] = frozenset()
    """Wire names of the `#[serde(default)]` members, which a positional (array) form may omit."""


class Base64Bytes(bytes):
    """Bytes carried as standard padded base64 text, validated at decode time.

    Used for fields the reference decodes while parsing params (a bad value is a -32602 params
    error naming the crate's complaint). Fields the reference decodes later in the handler stay
    `str` in their struct.
    """

    __slots__ = ()


U64_MAX = 2**64 - 1


def check_u64(*values: int | None) -> None:
    """Refuse u64/usize members past u64::MAX (see `U64`); call from `__post_init__`."""
    for value in values:
        if value is not None and value > U64_MAX:
            raise ValueError("invalid number")


class WideU64(int):
    """A u64 over its whole range, decoded by `dec_hook` with the reference's error texts (for
    `u64` wording outside structs that check `U64` members themselves). Used for file offsets
    and timeouts."""

    __slots__ = ()

    @classmethod
    def decode(cls, obj: Any) -> WideU64:
        if isinstance(obj, bool) or not isinstance(obj, int | float):
            raise ValueError(f"invalid type: {unexpected(obj)}, expected u64")
        if isinstance(obj, float) or not 0 <= obj <= U64_MAX:
            raise ValueError("invalid number")
        return cls(obj)


class NonZeroUsize(int):
    """serde's `NonZeroUsize` (only inside buffered enum content, where values are printed)."""

    __slots__ = ()

    @classmethod
    def decode(cls, obj: Any) -> NonZeroUsize:
        if isinstance(obj, bool) or not isinstance(obj, int):
            found = unexpected(obj, content=True)
            raise ValueError(f"invalid type: {found}, expected a nonzero usize")
        if not 0 < obj <= U64_MAX:
            raise ValueError(f"invalid value: integer `{obj}`, expected a nonzero usize")
        return cls(obj)


class UnitEnum(str):
    """A serde enum of unit variants: `"name"` or the single-key map form `{"name": null}`."""

    variants: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def decode(cls, obj: Any) -> UnitEnum:
        if isinstance(obj, str):
            if obj in cls.variants:
                return cls(obj)
            raise ValueError(unknown_variant(obj, cls.variants))
        if isinstance(obj, dict):
            if len(obj) != 1:
                raise ValueError("invalid value: map, expected map with a single key")
            ((key, value),) = obj.items()
            if key not in cls.variants:
                raise ValueError(unknown_variant(key, cls.variants))
            if value is not None:
                raise ValueError(f"invalid type: {unexpected(value)}, expected unit")
            return cls(key)
        raise ValueError(f"invalid type: {unexpected(obj)}, expected string or map")


_DECODABLE: list[type] = []


def decodable(cls: type[T]) -> type[T]:
    """Register a type whose `decode(obj)` classmethod `dec_hook` calls (raising `ValueError`
    with the reference's message for a bad value)."""
    _DECODABLE.append(cls)
    return cls


class UuidText(str):
    """A UUID kept as the text the client sent (the `uuid` crate's forms); the reference's
    parse errors on anything else."""

    __slots__ = ()

    @classmethod
    def decode(cls, obj: Any) -> UuidText:
        if not isinstance(obj, str):
            raise ValueError(f"invalid type: {unexpected(obj)}, expected a string")
        problem = uuid_error(obj)
        if problem is not None:
            raise ValueError(problem)
        return cls(obj)


def dec_hook(tp: type, obj: Any) -> Any:
    """msgspec decode hook for our custom field types.

    Raised `ValueError`s carry the reference's message for the bad value.
    """
    # The two string types first: they are what every `process/write` and fs request holds.
    if tp is Base64Bytes and type(obj) is str:
        return Base64Bytes(b64.decode(obj))
    if (
        tp is not Base64Bytes
        and tp is not PathUri
        and isinstance(tp, type)
        and issubclass(tp, (UnitEnum, WideU64, NonZeroUsize, UuidText, *_DECODABLE))
    ):
        return tp.decode(obj)  # type: ignore[attr-defined]
    if not isinstance(obj, str):
        raise ValueError(f"invalid type: {unexpected(obj)}, expected a string")
    if tp is PathUri:
        return PathUri.parse(obj)
    if tp is Base64Bytes:
        return Base64Bytes(b64.decode(obj))
    raise NotImplementedError(f"no decoder for {tp!r}")


def enc_hook(obj: Any) -> Any:
    """msgspec encode hook: a PathUri travels as its canonical URI text, `Base64Bytes` as the
    base64 text msgspec writes for plain bytes."""
    if isinstance(obj, PathUri):
        return obj.uri
    if isinstance(obj, bytes):
        return bytes(obj)
    if isinstance(obj, int):  # WideU64, NonZeroUsize
        return int(obj)
    if isinstance(obj, dict):  # decodable maps
        return dict(obj)
    if isinstance(obj, str):  # UnitEnum, UuidText
        return str(obj)
    raise NotImplementedError(f"cannot encode {type(obj)!r}")
