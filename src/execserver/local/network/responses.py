"""What the HTTP proxy answers itself, with codex 0.171's statuses, headers and bodies: the `403`
of a blocked request (a JSON body for plain HTTP, the message as text for CONNECT), `502
upstream failure` and `400` for a request it cannot read (both end the connection)."""

from __future__ import annotations

import email.utils

import msgspec

from execserver.local.network.decisions import Attempt, Verdict
from execserver.local.network.policy import (
    DENIED,
    METHOD_NOT_ALLOWED,
    MITM_REQUIRED,
    NOT_ALLOWED,
    NOT_ALLOWED_LOCAL,
)
from execserver.protocol.network import BlockedResponseBody

_MESSAGES = {
    NOT_ALLOWED: ("blocked-by-allowlist", "Domain not in allowlist."),
    NOT_ALLOWED_LOCAL: (
        "blocked-by-allowlist",
        "Sandbox policy blocks local/private network addresses.",
    ),
    DENIED: ("blocked-by-denylist", "Domain denied by the sandbox policy."),
    METHOD_NOT_ALLOWED: ("blocked-by-method-policy", "Method not allowed in limited mode."),
    MITM_REQUIRED: ("blocked-by-mitm-required", "MITM required for limited HTTPS."),
}
_OTHER = ("blocked-by-policy", "Request blocked by network policy.")


def date() -> bytes:
    return email.utils.formatdate(usegmt=True).encode()


def blocked_parts(attempt: Attempt, verdict: Verdict) -> tuple[bytes, bytes, bytes]:
    """(content type, `x-proxy-error` value, body) of the `403` for a refused attempt: a JSON
    body for plain HTTP, the message as text for CONNECT."""
    header, message = _MESSAGES.get(verdict.reason, _OTHER)
    if attempt.protocol != "http":
        return b"text/plain", header.encode(), message.encode()
    body = msgspec.json.encode(
        BlockedResponseBody(
            host=attempt.host,
            reason=verdict.reason,
            source=verdict.source,
            protocol=attempt.protocol,
            port=attempt.port,
            message=message,
        )
    )
    return b"application/json", header.encode(), body


def upstream_failure() -> bytes:
    return _text(b"502 Bad Gateway", b"upstream failure")


def bad_request() -> bytes:
    return _text(b"400 Bad Request", b"bad request")


def _text(status: bytes, body: bytes) -> bytes:
    head = b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain\r\nconnection: close\r\n"
    return head + _length_and_date(body) + body


def _length_and_date(body: bytes) -> bytes:
    return b"content-length: %d\r\ndate: %s\r\n\r\n" % (len(body), date())
