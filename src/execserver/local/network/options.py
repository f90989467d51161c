"""Executor-wide settings of managed networking, from `execserver serve`'s flags (codex 0.171's
`--linux-sandbox-transparent-tcp` and `--tcp-upstream-proxy HOST:PORT`)."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the proxy's modules load on first use, not with the server
    from execserver.local.network.relay import HttpProxy


@dataclass(frozen=True, slots=True)
class ExecutorNetworkOptions:
    transparent_tcp: bool = False
    """Every managed sandbox (a sandbox with `enforceManagedNetwork` and `networkProxy`) asks
    for transparent TCP, which this executor cannot give: such launches are refused as a
    launch with `proxy.transparentTcp` is (docs/protocol.md, networkProxyTransparentTcp)."""
    tcp_upstream: HttpProxy | None = None
    """The HTTP CONNECT proxy every SOCKS5 TCP connection of a managed proxy must go through
    (never directly; refused when it refuses)."""


def parse_tcp_upstream(text: str) -> HttpProxy:
    """`HOST:PORT` (IPv6 in brackets) -> the proxy; `ValueError` worded as the reference's."""
    host, separator, port_text = text.rpartition(":")
    if not separator:
        raise ValueError("missing port")
    if not port_text.isdigit():
        raise ValueError("parse port as u16: invalid digit found in string")
    port = int(port_text)
    if port > 0xFFFF:
        raise ValueError("parse port as u16: number too large to fit in target type")
    if port == 0:
        raise ValueError("TCP upstream proxy port must be nonzero")
    parsed = urllib.parse.urlsplit(f"//{host}:{port}")
    try:
        hostname = parsed.hostname
    except ValueError:
        hostname = None
    if not host or not hostname:
        raise ValueError("missing host")
    from execserver.local.network.relay import HttpProxy

    return HttpProxy(hostname, port)
