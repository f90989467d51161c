"""The HTTP capability: requests sent *from* the environment's host, and their values.

Failures before the response headers raise `InternalError` with the executor's wording
(`http/request failed: ...`); invalid requests raise `InvalidParams`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from execserver.protocol.http import HttpHeader

Headers = Sequence[tuple[str, str] | HttpHeader]
"""Request headers: `(name, value)` pairs, or `HttpHeader`s (which may take a value from an
environment variable of the executor, `value_env_var`)."""


def wire_headers(headers: Headers) -> list[HttpHeader]:
    """The headers as the wire's `HttpHeader` values."""
    return [
        header if isinstance(header, HttpHeader) else HttpHeader(name=header[0], value=header[1])
        for header in headers
    ]


@dataclass(slots=True)
class HttpResponse:
    """A buffered response: status, headers in arrival order, the whole body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


class HttpStream(Protocol):
    """A response whose body arrives in chunks."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> list[tuple[str, str]]: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body's chunks in order. Raises `InternalError` if the body fails midway."""
        ...


class HttpClient(Protocol):
    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Headers = (),
        body: bytes | None = None,
        timeout: float | None = None,
        follow_redirects: bool = True,
    ) -> HttpResponse:
        """Send one request and read the whole response.

        `timeout` (seconds) covers the whole exchange. Cancellation: the request is abandoned.
        """
        ...

    def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Headers = (),
        body: bytes | None = None,
        timeout: float | None = None,
        follow_redirects: bool = True,
    ) -> AbstractAsyncContextManager[HttpStream]:
        """Send one request; the context yields once the headers are in, the body streams.

        Leaving the context releases the response, read to the end or not.
        """
        ...
