"""In-process servers with injected timings (TTL, retention, pings) for fast behaviour tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from execserver.server.app import ExecServer, ServerConfig

StartServer = Callable[..., Awaitable[tuple[ExecServer, str]]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    servers: list[ExecServer] = []

    async def start(**config: Any) -> tuple[ExecServer, str]:
        server = ExecServer(ServerConfig(**config))
        servers.append(server)
        host, port = await server.listen_websocket("127.0.0.1", 0)
        return server, f"ws://{host}:{port}"

    yield start
    for server in servers:
        await server.aclose()
