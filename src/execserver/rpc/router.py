"""Method table: method name -> (params type, handler, gate family).

A handler takes the decoded params and returns the result, or an awaitable of it. Handlers that
can answer at once stay synchronous and run inline (no task per request). An awaitable result
holds back later requests of the connection until it completes (the reference's arrival-order
semantics), unless the route is `detached`: then it runs on its own (long polls).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from execserver.protocol.params import decode_params, decode_unit

Handler = Callable[[Any], Any | Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Route:
    """`params_type` None means serde's unit params (absent, null or `{}`)."""

    params_type: type | None
    handler: Handler
    gate: str | None
    detached: bool = False

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
        detached: bool = False,
    ) -> None:
        """Register `method`. `gate` names the method family for the handshake gate
        (`exec`, `filesystem`, ...); None for methods allowed before the handshake. A `detached`
        route's pending result does not hold back the requests after it."""
        if method in self._routes:
            raise ValueError(f"duplicate route {method}")
        self._routes[method] = Route(params_type, handler, gate, detached)

    def get(self, method: str) -> Route | None:
        return self._routes.get(method)

    def methods(self) -> list[str]:
        return sorted(self._routes)
