"""Outbound HTTP from this host for `http/request` (PROTOCOL.md §11), on one shared httpx client.

The request goes out as the reference's client would send it: method spelled as given, URL
normalised (WHATWG), headers in the reference's order (the user's, grouped by name, then
`accept`, `host` and `content-length`), userinfo turned into Basic authorization, no
user-agent, no compression negotiated, no cookies kept. Redirects are followed here (at most
10), rebuilding headers the way the reference does on each hop. Bodies come back undecoded, as
a stream, so a slow consumer bounds memory. Errors use the reference's wording.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.cookiejar
import os
import re
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

import httpx
import zstandard

from execserver.compat.reqwest import fits_http_uri, redirect_fails_builder, redirect_target
from execserver.compat.url import UrlError, WebUrl, parse_url
from execserver.environment.http_client import Headers, wire_headers
from execserver.environment.http_client import HttpResponse as BufferedResponse
from execserver.errors import (
    HttpBodyFailed,
    HttpBodyTooLarge,
    HttpRequestFailed,
    HttpRequestInvalid,
    InternalError,
)
from execserver.local.memory import ByteBudget, Reservation
from execserver.observability.telemetry import current_trace_headers
from execserver.protocol.http import HttpHeader

MAX_REDIRECTS = 10
# Timeouts past this (about 31 years) are treated as no timeout.
MAX_TIMEOUT_MS = 10**12
BODY_ERROR = "error decoding response body"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_PAYLOAD_HEADERS = ("content-type", "content-length", "content-encoding", "transfer-encoding")
_SENSITIVE_HEADERS = ("authorization", "cookie", "proxy-authorization", "www-authenticate")


class HeaderMap:
    """Ordered header entries with the semantics of Rust's `http::HeaderMap`.

    One entry per (lower-case) name, in order of first insertion, holding all its values;
    `insert` replaces an entry's values in place; `swap_remove` moves the last entry into the
    freed slot. The reference's header order on the wire follows from these rules.
    """

    def __init__(self) -> None:
        self._entries: list[tuple[str, list[str]]] = []

    def _index(self, name: str) -> int | None:
        for index, (entry_name, _) in enumerate(self._entries):
            if entry_name == name:
                return index
        return None

    def __contains__(self, name: str) -> bool:
        return self._index(name) is not None

    def append(self, name: str, value: str) -> None:
        index = self._index(name)
        if index is None:
            self._entries.append((name, [value]))
        else:
            self._entries[index][1].append(value)

    def insert(self, name: str, value: str) -> None:
        index = self._index(name)
        if index is None:
            self._entries.append((name, [value]))
        else:
            self._entries[index] = (name, [value])

    def swap_remove(self, name: str) -> None:
        index = self._index(name)
        if index is None:
            return
        last = self._entries.pop()
        if index < len(self._entries):
            self._entries[index] = last

    def copy(self) -> HeaderMap:
        clone = HeaderMap()
        clone._entries = [(name, list(values)) for name, values in self._entries]
        return clone

    def items(self) -> list[tuple[str, str]]:
        return [(name, value) for name, values in self._entries for value in values]


@dataclass(slots=True)
class PreparedRequest:
    method: str
    url: WebUrl
    headers: HeaderMap
    body: bytes | None
    user_host: bool = False
    user_length: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _valid_header_value(value: str) -> bool:
    return all(ch == "\t" or 0x20 <= ord(ch) <= 0x7E or ord(ch) >= 0x80 for ch in value)


def prepare(
    method: str,
    url: str,
    headers: list[HttpHeader],
    body: bytes | None,
    env: Mapping[str, str],
) -> PreparedRequest:
    """Validate the request in the reference's order; raise `InvalidParams` otherwise."""
    if not _TOKEN.fullmatch(method):
        raise HttpRequestInvalid("method is invalid: invalid HTTP method")
    try:
        parsed = parse_url(url)
    except UrlError as exc:
        raise HttpRequestInvalid(f"url is invalid: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise HttpRequestInvalid(f"only supports http and https URLs, got {parsed.scheme}")
    header_map = HeaderMap()
    if parsed.username or parsed.password is not None:
        credentials = unquote_to_bytes(parsed.username) + b":"
        credentials += unquote_to_bytes(parsed.password or "")
        header_map.append("authorization", "Basic " + base64.b64encode(credentials).decode())
    from_url_authorization = "authorization" in header_map
    for header in headers:
        if not _TOKEN.fullmatch(header.name):
            raise HttpRequestInvalid("header name is invalid: invalid HTTP header name")
        value = header.value
        if header.value_env_var is not None:
            extra = env.get(header.value_env_var)
            if extra is None:
                raise HttpRequestInvalid(
                    f"header {header.name} requires executor environment variable "
                    f"{header.value_env_var}"
                )
            if not extra:
                raise HttpRequestInvalid(
                    f"header {header.name} requires a non-empty executor "
                    f"environment variable {header.value_env_var}"
                )
            value += extra
        if not _valid_header_value(value):
            raise HttpRequestInvalid(
                f"header value is invalid for {header.name}: failed to parse header value"
            )
        name = header.name.lower()
        if name == "authorization" and from_url_authorization:
            header_map.insert(name, value)  # the user's replaces the one from the URL
            from_url_authorization = False
        else:
            header_map.append(name, value)
    # W3C trace context of the http/request span (only while a span is current: tracing on).
    for name, value in current_trace_headers().items():
        if name not in header_map:
            header_map.append(name, value)
    user_host = "host" in header_map
    user_length = "content-length" in header_map or "transfer-encoding" in header_map
    return PreparedRequest(method, parsed, header_map, body or None, user_host, user_length)


def _wire_headers(request: PreparedRequest) -> list[tuple[str, str]]:
    """The header map plus what is added at send time: accept, host, content-length (redirects
    rebuild the map without them, so they always come last)."""
    headers = request.headers.copy()
    if "accept" not in headers:
        headers.append("accept", "*/*")
    if "accept-encoding" not in headers:  # codex 0.171 decodes these (see `BodyDecoder`)
        headers.append("accept-encoding", "zstd,gzip")
    if not request.user_host:
        headers.append("host", request.url.authority())
    if request.body and not request.user_length:
        headers.append("content-length", str(len(request.body)))
    return headers.items()


def _redirect(previous: PreparedRequest, status: int, target: WebUrl) -> PreparedRequest:
    """The next hop's request, built from the previous one as the reference does."""
    method = previous.method
    body = previous.body
    if (status in (301, 302) and method == "POST") or (status == 303 and method != "HEAD"):
        method = "GET"
        body = None
    elif status == 303:
        body = None
    headers = previous.headers.copy()
    user_length = previous.user_length
    if (body is None and previous.body is not None) or status == 303:
        for name in _PAYLOAD_HEADERS:
            headers.swap_remove(name)
        user_length = False
    cross_origin = target.origin() != previous.url.origin()
    if cross_origin:
        for name in _SENSITIVE_HEADERS:
            headers.swap_remove(name)
    referer = _referer(previous.url, target, cross_origin)
    if referer is not None:
        headers.insert("referer", referer)
    return PreparedRequest(method, target, headers, body, previous.user_host, user_length)


def _referer(previous: WebUrl, target: WebUrl, cross_origin: bool) -> str | None:
    """The previous URL without userinfo and fragment; only its origin across origins; none
    from https to http."""
    if previous.scheme == "https" and target.scheme == "http":
        return None
    if cross_origin:
        port = "" if previous.port is None else f":{previous.port}"
        return f"{previous.scheme}://{previous.host}{port}/"
    return previous.serialize(fragment=False, userinfo=False)


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


def _malformed(response: httpx.Response) -> bool:
    """Control characters (other than tab) in a header value make the response unusable, as
    they do for the reference's client."""
    return any(
        any((b < 0x20 and b != 0x09) or b == 0x7F for b in value)
        for _, value in response.headers.raw
    )


def _response_headers(response: httpx.Response) -> list[tuple[str, str]]:
    """Lower-case names, grouped by name in order of first appearance; values that are not
    printable ASCII are dropped (the reference cannot render them as strings)."""
    groups: dict[str, list[str]] = {}
    for raw_name, raw_value in response.headers.raw:
        name = raw_name.decode("latin-1").lower()
        values = groups.setdefault(name, [])
        if all(0x20 <= b <= 0x7E or b == 0x09 for b in raw_value):
            values.append(raw_value.decode("ascii"))
    return [(name, value) for name, values in groups.items() for value in values]


class BodyDecoder:
    """Undoes a `gzip` or `zstd` content-coding, as codex 0.171's client does: only when the
    response has exactly one `content-encoding` header whose value is exactly one of those
    (`GZIP`, `gzip, gzip`, `br`, ... pass through); the decoded response loses its
    `content-encoding` and `content-length` headers. Undecodable or truncated input raises
    `ValueError`."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._gzip = zlib.decompressobj(16 + zlib.MAX_WBITS) if coding == "gzip" else None
        self._zstd = zstandard.ZstdDecompressor().decompressobj() if coding == "zstd" else None
        self._fed = False

    @classmethod
    def for_headers(cls, headers: list[tuple[str, str]]) -> BodyDecoder | None:
        codings = [value for name, value in headers if name == "content-encoding"]
        if len(codings) == 1 and codings[0] in ("gzip", "zstd"):
            return cls(codings[0])
        return None

    @staticmethod
    def decoded_headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(n, v) for n, v in headers if n not in ("content-encoding", "content-length")]

    def feed(self, data: bytes) -> bytes:
        self._fed = self._fed or bool(data)
        try:
            if self._gzip is not None:
                return self._gzip.decompress(data)
            assert self._zstd is not None
            return bytes(self._zstd.decompress(data))
        except (zlib.error, zstandard.ZstdError) as exc:
            raise ValueError(str(exc)) from None

    def finish(self) -> bytes:
        """What is left; raises `ValueError` when the encoded body ended early."""
        if not self._fed:  # HEAD, or an empty body: nothing to decode
            return b""
        if self._gzip is not None:
            if not self._gzip.eof:
                raise ValueError("truncated gzip body")
            return self._gzip.flush()
        assert self._zstd is not None
        try:
            return bytes(self._zstd.flush())
        except zstandard.ZstdError as exc:
            raise ValueError(str(exc)) from None


@dataclass(slots=True)
class StreamedResponse:
    """Status and headers received; `chunks()` yields the body (decoded, see `BodyDecoder`)
    within the request's deadline (raising `InternalError(BODY_ERROR_TEXT)` if it fails);
    `aclose()` releases it. An `HttpStream` (`aiter_bytes()`)."""

    status: int
    headers: list[tuple[str, str]]
    _response: httpx.Response
    deadline: float | None = None
    decoder: BodyDecoder | None = None

    @classmethod
    def of(cls, response: httpx.Response) -> StreamedResponse:
        headers = _response_headers(response)
        decoder = BodyDecoder.for_headers(headers)
        if decoder is not None:
            headers = decoder.decoded_headers(headers)
        return cls(response.status_code, headers, response, decoder=decoder)

    async def chunks(self) -> AsyncIterator[bytes]:
        raw = self._response.aiter_raw()
        decoder = self.decoder
        while True:
            # The deadline covers each read, not the consumer's time between chunks: a timeout
            # scope must not stay open across a yield.
            try:
                async with asyncio.timeout_at(self.deadline):
                    chunk = await anext(raw)
                if decoder is not None:
                    chunk = decoder.feed(chunk)
            except StopAsyncIteration:
                if decoder is not None:
                    try:
                        rest = decoder.finish()
                    except ValueError:
                        raise InternalError(BODY_ERROR) from None
                    if rest:
                        yield rest
                return
            except (httpx.HTTPError, TimeoutError, ValueError):
                raise InternalError(BODY_ERROR) from None
            if chunk:
                yield chunk

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        return self.chunks()

    async def read_all(self, reservation: Reservation | None = None) -> bytes:
        """The whole body; the response is released. Raises `InternalError` if reading fails,
        `HttpBodyTooLarge` if the body outgrows what `reservation` can hold."""
        parts = []
        try:
            async for chunk in self.chunks():
                if reservation is not None and not reservation.grow_to(
                    reservation.size + len(chunk)
                ):
                    raise HttpBodyTooLarge(reservation.left())
                parts.append(chunk)
            return b"".join(parts)
        except HttpBodyTooLarge:
            raise
        except InternalError:
            raise HttpBodyFailed(BODY_ERROR) from None
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._response.aclose()


def timeout_ms(timeout: float | None) -> int | None:
    """Seconds of the capability API as the wire's milliseconds (a positive timeout stays
    positive: 0 means "fail at once")."""
    if timeout is None:
        return None
    ms = round(timeout * 1000)
    return 1 if ms == 0 and timeout > 0 else ms


class LocalHttpClient:
    """The HTTP capability of this host (`HttpClient`): one pooled client for everything."""

    def __init__(
        self, env: Mapping[str, str] | None = None, *, body_budget: ByteBudget | None = None
    ) -> None:
        self.env = os.environ if env is None else env
        self._client: httpx.AsyncClient | None = None
        self._body_budget = body_budget
        """What buffered bodies may hold together (the server's memory budget); None: no cap."""

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                trust_env=True,
                follow_redirects=False,
                timeout=None,
                cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
            )
        return self._client

    async def _send_one(self, request: PreparedRequest) -> httpx.Response:
        client = self._get_client()
        url = request.url.serialize(fragment=False, userinfo=False)
        outgoing = client.build_request(request.method, url, content=request.body)
        outgoing.method = request.method  # httpx upper-cases; send it as given
        # Values as UTF-8 bytes (httpx would insist on ASCII text); surrounding blanks are
        # dropped, since the HTTP/1.1 writer refuses them and they are not part of a value.
        outgoing.headers = httpx.Headers(
            [(name.encode(), value.strip(" \t").encode()) for name, value in _wire_headers(request)]
        )
        # CONNECT asks for a tunnel: its target is the authority, not a path.
        target = request.url.authority() if request.method == "CONNECT" else request.url.target()
        outgoing.extensions["target"] = target.encode("ascii")
        # One exchange, nothing else: `client.send()` would also parse the Location of a 3xx
        # with its own (different) URL rules; redirects are decided here instead.
        return await client._send_single_request(outgoing)

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Headers = (),
        body: bytes | None = None,
        timeout: float | None = None,
        follow_redirects: bool = True,
    ) -> BufferedResponse:
        response = await self._fetch(
            method,
            url,
            headers=headers,
            body=body,
            timeout=timeout,
            follow_redirects=follow_redirects,
        )
        if self._body_budget is None:
            return BufferedResponse(response.status, response.headers, await response.read_all())
        reservation = Reservation(self._body_budget)
        try:
            body = await response.read_all(reservation)
            return BufferedResponse(response.status, response.headers, body)
        finally:
            reservation.release()

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Headers = (),
        body: bytes | None = None,
        timeout: float | None = None,
        follow_redirects: bool = True,
    ) -> AsyncIterator[StreamedResponse]:
        response = await self._fetch(
            method,
            url,
            headers=headers,
            body=body,
            timeout=timeout,
            follow_redirects=follow_redirects,
        )
        try:
            yield response
        finally:
            await asyncio.shield(response.aclose())

    async def _fetch(
        self,
        method: str,
        url: str,
        *,
        headers: Headers,
        body: bytes | None,
        timeout: float | None,
        follow_redirects: bool,
    ) -> StreamedResponse:
        """Validate and send a request; return once the final response headers are in.

        `timeout` bounds the whole exchange, body included (0 fails at once, as the
        reference's does; absurdly large values mean no timeout).
        """
        prepared = prepare(method, url, wire_headers(headers), body, self.env)
        timeout_ms_ = timeout_ms(timeout)
        if timeout_ms_ == 0:
            raise HttpRequestFailed("route-aware request timed out")
        deadline = None
        if timeout_ms_ is not None and timeout_ms_ < MAX_TIMEOUT_MS:
            deadline = asyncio.get_running_loop().time() + timeout_ms_ / 1000
        try:
            async with asyncio.timeout_at(deadline):
                response = await self.send(prepared, follow_redirects=follow_redirects)
        except TimeoutError:
            raise HttpRequestFailed(
                f"error sending request for url ({prepared.url.serialize(userinfo=False)})"
            ) from None
        response.deadline = deadline
        return response

    async def send(self, request: PreparedRequest, *, follow_redirects: bool) -> StreamedResponse:
        """Send (following redirects if asked) and return once the final headers are in.

        Raises `HttpRequestFailed("...")` on failures before the headers, in the
        reference's order: a Location its client cannot even build a URL from fails the request
        (under any policy); an unusable Location leaves the 3xx as the answer; then the target's
        scheme and the redirect limit are checked.
        Cancellation: any open response is released.
        """
        original = request.url.serialize(userinfo=False)
        redirects = 0
        while True:
            if not fits_http_uri(request.url):
                raise HttpRequestFailed(f"builder error for url ({request.url.serialize()})")
            try:
                response = await self._send_one(request)
            except (httpx.HTTPError, ValueError):
                shown = original if redirects == 0 else request.url.serialize()
                raise HttpRequestFailed(f"error sending request for url ({shown})") from None
            if _malformed(response):
                await response.aclose()
                shown = original if redirects == 0 else request.url.serialize()
                raise HttpRequestFailed(f"error sending request for url ({shown})")
            final = StreamedResponse.of(response)
            if response.status_code not in _REDIRECT_STATUSES:
                return final
            raw_location = response.headers.get_list("location")
            location = raw_location[0].encode("latin-1") if raw_location else None
            if location is not None and redirect_fails_builder(request.url, location):
                await response.aclose()
                shown = request.url.serialize(userinfo=redirects > 0)
                raise HttpRequestFailed(f"builder error for url ({shown})")
            if not follow_redirects or location is None:
                return final
            target = redirect_target(request.url, location)
            if target is None:
                return final  # an unusable Location leaves the 3xx as the answer
            await response.aclose()
            if target.scheme not in ("http", "https"):
                raise HttpRequestFailed(
                    f"redirect target uses unsupported URL scheme: {target.scheme}"
                )
            if redirects == MAX_REDIRECTS:
                raise HttpRequestFailed("too many redirects")
            redirects += 1
            request = _redirect(request, response.status_code, target)

    async def aclose(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None
