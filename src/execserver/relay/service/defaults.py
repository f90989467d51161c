"""The relay service's default limits and lifetimes, importable without its web stack (the
command line builds its flags from them)."""

from __future__ import annotations

from typing import Final

MAX_STREAMS_PER_EXECUTOR: Final = 128
AUTHORIZATION_TTL_S: Final = 60.0
EXECUTOR_TICKET_TTL_S: Final = 3600.0
HARNESS_TICKET_TTL_S: Final = 60.0
CONNECT_WAIT_S: Final = 5.0
"""How long `/connect` waits for the environment's executor to register and attach (a codex
harness does not retry a failed `/connect`; a codex executor reconnects within ~1-2 s)."""
OUTBOX_LIMIT_BYTES: Final = 4 << 20
FIRST_CONNECT_TIMEOUT_S: Final = 10.0
"""How long a fleet node tries to reach NATS at start-up before it gives up (after that first
connection it reconnects forever; `relay --nats-connect-timeout`)."""
NATS_CLOSE_FLUSH_S: Final = 5
"""At shutdown, how long a fleet node waits for NATS to confirm what each of its connections
published before closing it as it is (`nats_state.close_connection`)."""
HARNESS_STALL_S: Final = 30.0
"""How long a harness socket may leave its outbox full (the executor's socket waits meanwhile)
before the relay gives up on it and resets its stream."""
LISTEN_BACKLOG: Final = 4096
"""Connections the kernel completes for the relay before it accepts them (capped by
net.core.somaxconn). When a fleet node dies, its executors all reconnect to the others at
once, while those may be paused (a full garbage collection takes about a second with 2,000
executors, docs/SCALING.md); with aiohttp's default of 128 the rest wait for SYN retransmits
(1 s, 3 s, …) and the balancer's health checks time out."""
