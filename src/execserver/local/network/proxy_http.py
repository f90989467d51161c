"""The HTTP face of the managed proxy: absolute-form requests (`GET http://host/path`, also
`https://`, origin-form with a `Host` header) and CONNECT tunnels (intercepted for the
credential broker, mitm.py), one decision per request
(HTTP/1.1 keep-alive through h11). A blocked request gets the reference's `403`; an allowed one
is sent to its destination on a fresh connection and the answer relayed back."""

from __future__ import annotations

import asyncio
import urllib.parse

import h11

from execserver.local.network import relay, responses
from execserver.local.network.credentials import CredentialBroker
from execserver.local.network.decisions import Attempt, Gatekeeper, Verdict
from execserver.local.network.policy import METHOD_NOT_ALLOWED, MITM_REQUIRED, normalize_host

MAX_HEAD_BYTES = 64 * 1024
MAX_DRAINED_BODY_BYTES = 1024 * 1024
"""A refused request's body is read and dropped up to this much (keep-alive); past it the
connection ends."""
# Hop-by-hop headers (RFC 9110 §7.6.1) and the proxy's own: never forwarded.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


class _BadRequest(Exception):
    """The client sent something we cannot act on: `400`, and the connection ends."""


class Ended(Exception):
    """The connection cannot go on (its answer was sent, if any)."""


async def serve(
    streams: relay.Streams,
    gate: Gatekeeper,
    client: str,
    upstream: relay.UpstreamProxies | None,
    *,
    broker: CredentialBroker | None = None,
) -> None:
    """Serve one client connection until it ends (through the executor's own proxy, when
    `upstream` is given and names one for the destination). With a `broker`, CONNECT tunnels
    to hosts its credentials are bound to are intercepted (mitm.py)."""
    reader, writer = streams
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    try:
        while True:
            event = await next_event(conn, reader)
            if not isinstance(event, h11.Request):
                return
            if event.method == b"CONNECT":
                await _tunnel(
                    conn,
                    streams,
                    event,
                    gate=gate,
                    client=client,
                    upstream=upstream,
                    broker=broker,
                )
            else:
                await _forward(conn, streams, event, gate=gate, client=client, upstream=upstream)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (h11.RemoteProtocolError, _BadRequest):
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            writer.write(responses.bad_request())
    except (Ended, h11.LocalProtocolError, ConnectionError, OSError):
        pass


async def next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Event | type:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await reader.read(relay.CHUNK_BYTES))


def _send(conn: h11.Connection, writer: asyncio.StreamWriter, *events: h11.Event) -> None:
    """Send `events` in one write (a response head and its short body in one segment)."""
    writer.write(b"".join(conn.send(event) or b"" for event in events))


async def refuse(
    conn: h11.Connection, streams: relay.Streams, attempt: Attempt, verdict: Verdict
) -> None:
    """The `403`; the rest of the request is read and dropped (so the connection can go on)."""
    content_type, header, body = responses.blocked_parts(attempt, verdict)
    _send(
        conn,
        streams[1],
        h11.Response(
            status_code=403,
            reason=b"Forbidden",
            headers=[
                (b"content-type", content_type),
                (b"x-proxy-error", header),
                (b"content-length", str(len(body)).encode()),
                (b"date", responses.date()),
            ],
        ),
        h11.Data(data=body),
        h11.EndOfMessage(),
    )
    drained = 0
    while conn.their_state is h11.SEND_BODY and drained <= MAX_DRAINED_BODY_BYTES:
        event = await next_event(conn, streams[0])
        if isinstance(event, h11.Data):
            drained += len(event.data)


def authority_text(host: str, port: int) -> str:
    """`host[:port]` for a Host header (the default ports left out, IPv6 in brackets)."""
    authority = f"[{host}]" if ":" in host else host
    return authority if port in (80, 443) else f"{authority}:{port}"


def _authority(text: str, default_port: int) -> tuple[str, int]:
    """`host[:port]` (IPv6 in brackets) -> (host, port)."""
    parsed = urllib.parse.urlsplit("//" + text)
    try:
        port = parsed.port
    except ValueError:
        raise _BadRequest from None
    if not parsed.hostname:
        raise _BadRequest
    return parsed.hostname, port if port is not None else default_port


def _target(request: h11.Request) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query) of a plain request."""
    target = request.target.decode("latin-1")
    if target.startswith("/"):
        host_header = next((v for k, v in request.headers if k == b"host"), None)
        if host_header is None:
            raise _BadRequest
        host, port = _authority(host_header.decode("latin-1"), 80)
        return "http", host, port, target
    parsed = urllib.parse.urlsplit(target)
    if parsed.scheme not in ("http", "https"):
        raise _BadRequest
    default_port = 443 if parsed.scheme == "https" else 80
    host, port = _authority(parsed.netloc.rpartition("@")[2], default_port)
    path = parsed.path or "/"
    if parsed.query:
        path += "?" + parsed.query
    return parsed.scheme, host, port, path


async def _forward(
    conn: h11.Connection,
    streams: relay.Streams,
    request: h11.Request,
    *,
    gate: Gatekeeper,
    client: str,
    upstream: relay.UpstreamProxies | None,
) -> None:
    scheme, host, port, path = _target(request)
    method = request.method.decode("latin-1")
    attempt = Attempt("http", normalize_host(host), port, method, client)
    verdict = await gate.check_destination(attempt)
    if verdict.allowed and not gate.policy.method_allowed(method):
        verdict = gate.refuse_by_mode(attempt, METHOD_NOT_ALLOWED)
    if not verdict.allowed:
        await refuse(conn, streams, attempt, verdict)
        return
    tls = scheme == "https"
    via = None if upstream is None else upstream.for_target(host, tls=tls)
    target = path
    try:
        if via is not None and not tls:  # a plain request goes to the proxy in absolute form
            destination = await relay.open_proxy(via)
            target = f"http://{authority_text(host, port)}{path}"
        else:
            destination = await relay.open_upstream(host, port, tls=tls, via=via)
    except (OSError, TimeoutError):
        streams[1].write(responses.upstream_failure())
        raise Ended from None
    try:
        await exchange(
            conn,
            streams,
            destination,
            request,
            authority=authority_text(host, port),
            target=target,
        )
    finally:
        await relay.close(destination[1])


async def exchange(
    conn: h11.Connection,
    streams: relay.Streams,
    upstream: relay.Streams,
    request: h11.Request,
    *,
    authority: str,
    target: str,
) -> None:
    """Send the request (body streamed) upstream and relay the answer."""
    reader, writer = streams
    up_reader, up_writer = upstream
    out = h11.Connection(h11.CLIENT)
    headers = [(k, v) for k, v in request.headers if k not in _HOP_BY_HOP and k != b"host"]
    up_writer.write(
        out.send(
            h11.Request(
                method=request.method,
                target=target.encode("latin-1"),
                headers=[(b"host", authority.encode()), *headers, (b"connection", b"close")],
            )
        )
        or b""
    )
    while True:  # the request body, as the client sends it
        event = await next_event(conn, reader)
        if isinstance(event, h11.Data):
            up_writer.write(out.send(event) or b"")
            await up_writer.drain()
        elif isinstance(event, h11.EndOfMessage):
            up_writer.write(out.send(h11.EndOfMessage()) or b"")
            break
        else:
            raise Ended
    await up_writer.drain()
    try:
        while True:  # the answer
            event = await next_event(out, up_reader)
            if isinstance(event, h11.InformationalResponse):
                continue
            if isinstance(event, h11.Response):
                kept = [(k, v) for k, v in event.headers if k not in _HOP_BY_HOP]
                _send(
                    conn,
                    writer,
                    h11.Response(status_code=event.status_code, reason=event.reason, headers=kept),
                )
            elif isinstance(event, h11.Data):
                _send(conn, writer, event)
                await writer.drain()
            elif isinstance(event, h11.EndOfMessage):
                _send(conn, writer, h11.EndOfMessage())
                return
            else:
                raise Ended
    except h11.RemoteProtocolError:  # the destination's answer is not HTTP
        if conn.our_state is h11.SEND_RESPONSE:
            writer.write(responses.upstream_failure())
        raise Ended from None


async def _tunnel(
    conn: h11.Connection,
    streams: relay.Streams,
    request: h11.Request,
    *,
    gate: Gatekeeper,
    client: str,
    upstream: relay.UpstreamProxies | None,
    broker: CredentialBroker | None,
) -> None:
    """CONNECT: refused with a `403` (the connection goes on), or `200` and a tunnel that ends
    the connection."""
    host, port = _authority(request.target.decode("latin-1"), 80)
    await next_event(conn, streams[0])  # the CONNECT's end of message
    attempt = Attempt("https_connect", normalize_host(host), port, "CONNECT", client)
    verdict = await gate.check_destination(attempt)
    intercepted = broker is not None and broker.intercepts(host, port)
    if verdict.allowed and gate.policy.limited and not intercepted:
        # Limited mode allows only safe methods, which it cannot see inside TLS it does not
        # intercept (an intercepted tunnel has each request checked, as the reference does).
        verdict = gate.refuse_by_mode(attempt, MITM_REQUIRED)
    if not verdict.allowed:
        await refuse(conn, streams, attempt, verdict)
        return
    context = None
    if intercepted:
        from execserver.local.network import certs, mitm

        context = await mitm.server_context(certs.authority(), host)
    _send(
        conn,
        streams[1],
        h11.Response(status_code=200, reason=b"OK", headers=[(b"date", responses.date())]),
    )
    already, _ = conn.trailing_data
    via = None if upstream is None else upstream.for_target(host, tls=True)
    if broker is not None and context is not None and not already:
        # No await before this: the client's TLS handshake must reach the TLS layer.
        await mitm.intercept(
            streams,
            attempt,
            context=context,
            broker=broker,
            via=via,
            method_allowed=gate.policy.method_allowed,
        )
        raise Ended
    try:
        destination = await relay.open_upstream(host, port, via=via)
    except (OSError, TimeoutError):
        raise Ended from None  # the tunnel was promised; it just ends, as the reference's does
    try:
        await relay.splice(streams, destination, already)
    finally:
        await relay.close(destination[1])
    raise Ended
