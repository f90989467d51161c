"""Method table: method name -> (params type, handler, gate family).

A handler takes the decoded params and returns the result, or an awaitable of it. Handlers that
can answer at once stay synchronous, so they run inline in arrival order (no task per request);
only those that must wait (long polls, blocking I/O) return awaitables and run concurrently.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from execserver.protocol.serde import decode_params, decode_unit

Handler = Callable[[Any], Any | Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Route:
    """`params_type` None means serde's unit params (absent, null or `{}`)."""

    params_type: type | None
    handler: Handler
    gate: str | None

    def decode(self, params: Any) -> Any:
        if self.params_type is None:
            decode_unit(params)
            return None
        return decode_params(params, self.params_type)


class Router:
    """Routes of one connection."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}

    def add(
        self,
        method: str,
        params_type: type | None,
        handler: Handler,
        *,
        gate: str | None,
    ) -> None:
        """Register `method`. `gate` names the method family for the handshake gate
        (`exec`, `filesystem`, ...); None for methods allowed before the handshake."""
        if method in self._routes:
            raise ValueError(f"duplicate route {method}")
        self._routes[method] = Route(params_type, handler, gate)

    def get(self, method: str) -> Route | None:
        return self._routes.get(method)

    def methods(self) -> list[str]:
        return sorted(self._routes)
