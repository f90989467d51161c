"""HTTP/1.1 request heads for the WebSocket listener: parse, route, upgrade checks, responses.

Routes follow the reference: any request carrying `Origin` -> 403 (checked first); `/readyz`
GET/HEAD -> 200, other methods -> 405; extra GET/HEAD pages (such as `/metrics`); `/` ->
WebSocket upgrade with axum's rejection texts, then authentication (the hook); anything else ->
404. Pure data: no I/O.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_REQUEST_HEAD_BYTES = 64 * 1024

_REASONS = {
    101: "Switching Protocols",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
}


@dataclass(slots=True)
class HttpRequest:
    """A parsed request head. Header names are lower-cased; repeats are joined with `,`."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    principal: str | None = None
    """Who the request comes from, as the authentication hook established it."""
    peer_address: object = None
    """The socket's peer and local addresses (as asyncio reports them), for the hook."""
    local_address: object = None

    def has_token(self, name: str, token: str) -> bool:
        value = self.headers.get(name, "")
        return any(part.strip().lower() == token for part in value.split(","))


@dataclass(slots=True)
class HttpResponse:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    def serialize(self, *, head_only: bool = False) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {_REASONS.get(self.status, 'Unknown')}"]
        names = {name for name, _ in self.headers}
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        if self.status != 101:
            if self.body and "content-type" not in names:
                lines.append("content-type: text/plain; charset=utf-8")
            lines.append(f"content-length: {len(self.body)}")
        lines.append(f"date: {email.utils.formatdate(usegmt=True)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + self.body


HttpHook = Callable[[HttpRequest], HttpResponse | None]
HttpPage = Callable[[HttpRequest], HttpResponse]
"""Authentication of an upgrade request that passed every other check: a rejection, or None
to upgrade (the hook records `request.principal`)."""


# RFC 9110 §5.6.2: a field name is a token; no whitespace before the colon (RFC 9112 §5.1,
# "MUST respond with 400"), and no folded continuation lines (§5.2).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A field value: visible characters, obs-text, spaces and tabs; other control bytes are refused.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


def parse_request_head(head: bytes) -> HttpRequest | None:
    """The request head, or None when it is not valid HTTP/1.1 (answered 400, like hyper)."""
    try:
        text = head.decode("latin-1")
        request_line, *header_lines = text.split("\r\n")
        method, target, _version = request_line.split(" ", 2)
    except ValueError:
        return None
    headers: dict[str, str] = {}
    for line in header_lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            return None
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]},{value}" if key in headers else value
    path = target.split("?", 1)[0]
    return HttpRequest(method, path, headers)


def upgrade_rejection(request: HttpRequest) -> HttpResponse | None:
    """axum's WebSocketUpgrade checks, in its order and with its texts."""
    if request.method != "GET":
        return HttpResponse(405, b"Request method must be `GET`")
    if not request.has_token("connection", "upgrade"):
        return HttpResponse(400, b"Connection header did not include 'upgrade'")
    if request.headers.get("upgrade", "").lower() != "websocket":
        return HttpResponse(400, b"`Upgrade` header did not include 'websocket'")
    if "sec-websocket-key" not in request.headers:
        return HttpResponse(400, b"`Sec-WebSocket-Key` header missing")
    if request.headers.get("sec-websocket-version", "") != "13":
        return HttpResponse(400, b"`Sec-WebSocket-Version` header did not include '13'")
    return None


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode("latin-1") + _GUID).digest()).decode()


def route(
    request: HttpRequest, hook: HttpHook | None, pages: Mapping[str, HttpPage] | None = None
) -> HttpResponse | None:
    """The response for a plain HTTP request, or None to upgrade to a WebSocket.

    `pages` are extra GET/HEAD pages (such as `/metrics`): after the Origin check and behind the
    same authentication hook as the WebSocket."""
    if "origin" in request.headers:
        return HttpResponse(403)
    if request.path == "/readyz":
        if request.method in ("GET", "HEAD"):
            return HttpResponse(200)
        return HttpResponse(405, headers=[("allow", "GET,HEAD")])
    page = pages.get(request.path) if pages else None
    if page is not None:
        if request.method not in ("GET", "HEAD"):
            return HttpResponse(405, headers=[("allow", "GET,HEAD")])
        return (hook(request) if hook is not None else None) or page(request)
    if request.path != "/":
        return HttpResponse(404)
    rejection = upgrade_rejection(request)
    if rejection is None and hook is not None:
        # Like the reference, authentication runs only once the upgrade itself is valid.
        rejection = hook(request)
    return rejection


def format_peer(address: object) -> str:
    """`ip:port` like Rust's SocketAddr (`[v6]:port`)."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


RETRY_AFTER_CAP_S = 300.0
"""The longest `Retry-After` taken at its word (a larger one is capped to it)."""


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header in its delay-seconds form (RFC 9110
    §10.2.3), capped at `RETRY_AFTER_CAP_S`; None when absent or not a plain non-negative
    integer (the HTTP-date form is ignored: it depends on the clocks agreeing)."""
    if value is None:
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit():
        return None
    return min(float(int(value)), RETRY_AFTER_CAP_S)
