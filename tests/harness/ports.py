"""Loopback ports for servers a test starts on a port it must know in advance (NATS routes, a
restarted node that must come back on its port, a balancer's config).

A port bound to 0 and released comes from the kernel's ephemeral range, and the kernel may hand
that very port to the next outgoing connection of any process before the server binds it
("address already in use"). These ports come from below that range, where the kernel never
assigns on its own; each is checked free by binding it, and picked at random so that
concurrent test runs do not walk the same sequence.

A port is handed out once per test process: a free port is only free until its server binds
it, and a test that picks ports for two groups of servers before starting either (a fleet's
relay nodes, then its NATS cluster) must not get one port twice.
"""

from __future__ import annotations

import random
import socket

_FIRST, _LAST = 20000, 32000
_handed_out: set[int] = set()


def _ephemeral_range() -> range:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(part) for part in f.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def listen_ports(count: int) -> list[int]:
    """`count` distinct loopback ports, free now, outside the kernel's ephemeral range."""
    ephemeral = _ephemeral_range()
    chosen: list[int] = []
    candidates = [p for p in range(_FIRST, _LAST) if p not in ephemeral and p not in _handed_out]
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen.append(port)
        if len(chosen) == count:
            _handed_out.update(chosen)
            return chosen
    raise RuntimeError(f"no {count} free loopback ports outside the ephemeral range")


def listen_port() -> int:
    return listen_ports(1)[0]
