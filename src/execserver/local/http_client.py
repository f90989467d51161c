"""Outbound HTTP from this host for `http/request` (PROTOCOL.md §11), on one shared httpx client.

Requests are validated with the reference's messages, sent exactly as asked (method spelling,
header order and repeats, no user-agent, no compression negotiated, no cookie jar), redirects
are followed by hand (at most 10, with a `referer`, like the reference's client), and bodies are
returned undecoded. The caller reads the body as a stream, so a slow consumer bounds memory.
"""

from __future__ import annotations

import contextlib
import http.cookiejar
import os
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from execserver.errors import InternalError, InvalidParams
from execserver.protocol.http import HttpHeader

MAX_REDIRECTS = 10
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REDIRECT_STATUSES = {301, 302, 303, 307, 308}


@dataclass(slots=True)
class PreparedRequest:
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes | None


def display_url(url: str) -> str:
    """The URL as the reference prints it in errors (an empty path becomes `/`)."""
    parts = urlsplit(url)
    if parts.path == "" and parts.query == "" and parts.fragment == "":
        return url + "/"
    return url


def prepare(
    method: str,
    url: str,
    headers: list[HttpHeader],
    body: bytes | None,
    env: Mapping[str, str],
) -> PreparedRequest:
    """Validate the request the way the reference does; raise `InvalidParams` otherwise."""
    if not _TOKEN.fullmatch(method):
        raise InvalidParams("http/request method is invalid: invalid HTTP method")
    parts = urlsplit(url)
    if not parts.scheme or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", parts.scheme):
        raise InvalidParams("http/request url is invalid: relative URL without a base")
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise InvalidParams(f"http/request only supports http and https URLs, got {scheme}")
    if not parts.hostname:
        raise InvalidParams("http/request url is invalid: empty host")
    prepared: list[tuple[str, str]] = []
    for header in headers:
        if not _TOKEN.fullmatch(header.name):
            raise InvalidParams("http/request header name is invalid: invalid HTTP header name")
        value = header.value
        if header.value_env_var is not None:
            extra = env.get(header.value_env_var, "")
            if not extra:
                raise InvalidParams(
                    f"http/request header {header.name} requires executor environment variable "
                    f"{header.value_env_var}"
                )
            value += extra
        if any(ch in value for ch in "\r\n\0") or any(ord(ch) > 0xFF for ch in value):
            raise InvalidParams(
                f"http/request header value is invalid for {header.name}: "
                "failed to parse header value"
            )
        prepared.append((header.name, value))
    return PreparedRequest(method, url, prepared, body)


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


@dataclass(slots=True)
class HttpResponse:
    """Status and headers received; `chunks()` yields the raw body; `aclose()` releases it."""

    status: int
    headers: list[tuple[str, str]]
    _response: httpx.Response

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.aiter_raw():
            if chunk:
                yield chunk

    async def aclose(self) -> None:
        await self._response.aclose()


def _response_headers(response: httpx.Response) -> list[tuple[str, str]]:
    headers = []
    for name, value in response.headers.raw:
        try:
            headers.append((name.decode("ascii").lower(), value.decode("utf-8")))
        except UnicodeDecodeError:
            continue  # the reference drops values that are not UTF-8
    return headers


class LocalHttpClient:
    """One pooled client for the whole server."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = os.environ if env is None else env
        self._client: httpx.AsyncClient | None = None

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            client = httpx.AsyncClient(
                trust_env=True,
                follow_redirects=False,
                timeout=None,
                cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
            )
            for name in ("user-agent", "accept-encoding", "connection"):
                del client.headers[name]
            self._client = client
        return self._client

    async def send(self, request: PreparedRequest, *, follow_redirects: bool) -> HttpResponse:
        """Send and return once the response headers are in.

        Raises `InternalError("http/request failed: ...")` on transport failures.
        Cancellation: the connection is released.
        """
        client = self._get_client()
        outgoing = client.build_request(
            request.method, request.url, headers=request.headers, content=request.body
        )
        outgoing.method = request.method  # httpx upper-cases; send it as given
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = await client.send(outgoing, stream=True, follow_redirects=False)
            except httpx.HTTPError:
                raise InternalError(
                    f"http/request failed: error sending request for url "
                    f"({display_url(str(outgoing.url))})"
                ) from None
            if not (
                follow_redirects
                and response.status_code in _REDIRECT_STATUSES
                and "location" in response.headers
            ):
                return HttpResponse(response.status_code, _response_headers(response), response)
            await response.aclose()
            previous = outgoing
            outgoing = client._build_redirect_request(previous, response)
            if previous.url.scheme == "https" and outgoing.url.scheme == "http":
                outgoing.headers.pop("referer", None)
            else:
                outgoing.headers["referer"] = str(previous.url.copy_with(fragment=None))
        raise InternalError(
            f"http/request failed: error following redirect for url "
            f"({display_url(str(outgoing.url))})"
        )

    async def aclose(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None


async def read_all(response: HttpResponse) -> bytes:
    """The whole body. Raises `InternalError` if reading it fails."""
    parts = []
    try:
        async for chunk in response.chunks():
            parts.append(chunk)
    except httpx.HTTPError as exc:
        raise InternalError(f"http/request failed: {body_error(exc)}") from None
    finally:
        await response.aclose()
    return b"".join(parts)


def body_error(exc: BaseException) -> str:
    """How the reference words a failure while reading a body."""
    return "error decoding response body"
