"""TLS interception for the credential broker: a CONNECT tunnel (or SOCKS5 connection) to a
host a masked credential is bound to is answered with TLS under a leaf certificate of the
executor's CA (certs.py); each HTTP/1.1 request read inside it gets its dummies swapped for the
real values where the request's URL is bound (credentials.py), and is sent on to the
destination over a fresh, verified TLS connection (through the executor's own proxy when the
launch allows one, or the mandatory TCP upstream for SOCKS5).

A client that does not trust the CA fails its handshake: nothing is sent anywhere. Headers are
never logged.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

import h11

from execserver.local.network import proxy_http, relay, responses
from execserver.local.network.certs import CertificateAuthority
from execserver.local.network.credentials import CredentialBroker
from execserver.local.network.decisions import MODE_GUARD, Attempt, Verdict
from execserver.local.network.policy import METHOD_NOT_ALLOWED

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_S = 30.0


async def server_context(authority: CertificateAuthority, host: str) -> ssl.SSLContext:
    """The TLS context to present to the client for `host` (made off the event loop)."""
    return await asyncio.to_thread(authority.server_context, host)


async def intercept(
    streams: relay.Streams,
    tunnel: Attempt,
    *,
    context: ssl.SSLContext,
    broker: CredentialBroker,
    via: relay.HttpProxy | None,
    method_allowed: Callable[[str], bool],
) -> None:
    """Serve the allowed `tunnel` (a CONNECT or a SOCKS5 connection) as its TLS server until
    the client is done. In
    limited mode (`method_allowed` says no) a request with another method than a safe one gets
    the mode's `403`
    (`blocked-by-method-policy`, not audited, as the reference answers) and goes nowhere.

    Must be called right after the tunnel's `200` is written, with no await in between: bytes
    of the client's handshake read into the plain stream before TLS starts would be lost."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=relay.CHUNK_BYTES, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)  # a fresh one, TLS-aware
    try:
        transport = await loop.start_tls(
            streams[1].transport,
            protocol,
            context,
            server_side=True,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
        )
    except (OSError, ConnectionError, TimeoutError) as exc:
        log.info("credential broker: TLS handshake with the client failed (%s)", type(exc).__name__)
        return
    if transport is None:
        return
    protocol.connection_made(transport)  # start_tls does not: the reader learns its transport
    tls_writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    tls_streams = (reader, tls_writer)
    host, port = tunnel.host, tunnel.port
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=proxy_http.MAX_HEAD_BYTES)
    authority_text = proxy_http.authority_text(host, port)
    try:
        while True:
            event = await proxy_http.next_event(conn, reader)
            if not isinstance(event, h11.Request):
                return
            if not method_allowed(event.method.decode("latin-1")):
                refusal = Verdict(False, METHOD_NOT_ALLOWED, MODE_GUARD)
                await proxy_http.refuse(conn, tls_streams, tunnel, refusal)
                conn.start_next_cycle()
                continue
            headers = list(event.headers)
            target = event.target.decode("latin-1")
            broker.inject(host, port, target, headers)
            request = h11.Request(
                method=event.method, target=event.target, headers=headers, http_version="1.1"
            )
            try:
                destination = await relay.open_upstream(host, port, tls=True, via=via)
            except (OSError, TimeoutError):
                tls_writer.write(responses.upstream_failure())
                return
            try:
                await proxy_http.exchange(
                    conn,
                    tls_streams,
                    destination,
                    request,
                    authority=authority_text,
                    target=target,
                )
            finally:
                await relay.close(destination[1])
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (h11.RemoteProtocolError, h11.LocalProtocolError, proxy_http.Ended):
        return
    except (ConnectionError, OSError):
        return
    finally:
        await relay.close(tls_writer)
