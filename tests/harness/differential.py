"""Run one scripted conversation against our server and the reference, compare what came back.

A case is an async function `case(ctx) -> observations`; it talks to one server through
`ctx` (raw wire clients, raw sockets, a scratch directory) and returns JSON-able observations.
The runner executes it against both servers and compares the observations after masking only
what legitimately varies (uuids, peer ports, timestamps, versions, host paths of binaries).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.servers import RunningServer, start_server
from tests.harness.wire import WireClient

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_PEER = re.compile(r"exec-server websocket (\[[0-9a-f:]+\]|[0-9.]+):\d+")
_DATE = re.compile(r"^date: .*$", re.MULTILINE)
# environment/info members that describe the implementation, not the host.
_IMPLEMENTATION_FIELDS = ("executorVersion", "providerId", "prependPathDirs", "capabilities")


@dataclass
class CaseContext:
    """What a case gets: the server's URL and a scratch directory of its own."""

    url: str
    workdir: Path
    kind: str
    clients: list[WireClient] = field(default_factory=list)
    servers: list[RunningServer] = field(default_factory=list)

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.url[len("ws://") :].rsplit(":", 1)
        return host.strip("[]"), int(port)

    def uri(self, *parts: str) -> str:
        return "file://" + str(self.workdir.joinpath(*parts))

    async def server(self, env: Mapping[str, str]) -> str:
        """Start a dedicated server of this case's kind, with `env` added to the test's
        environment (its own `CODEX_HOME`, `HOME`, ...) and the scratch directory as its cwd;
        it is stopped when the case ends. Returns its URL (pass it to `client(url=...)`)."""
        running = await start_server(
            self.kind, self.workdir.parent, env={**os.environ, **env}, cwd=self.workdir
        )
        self.servers.append(running)
        return running.url

    async def client(
        self, *, initialize: bool = True, url: str | None = None, **kwargs: Any
    ) -> WireClient:
        client = await WireClient.connect(url or self.url, **kwargs)
        self.clients.append(client)
        if initialize:
            response = await client.initialize()
            assert "result" in response, response
        return client

    async def http(self, raw_request: bytes, *, timeout: float = 5.0) -> str:
        """Send a raw HTTP request, return the raw response text (without the date header)."""
        host, port = self.host_port
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(raw_request)
            await writer.drain()
            data = b""
            with contextlib.suppress(TimeoutError, ConnectionError):
                async with asyncio.timeout(timeout):
                    head_end = -1
                    while head_end < 0:
                        chunk = await reader.read(65536)
                        if not chunk:
                            break
                        data += chunk
                        head_end = data.find(b"\r\n\r\n")
                    length = re.search(rb"(?i)content-length: (\d+)", data[:head_end])
                    if length and not raw_request.startswith(b"HEAD"):
                        while len(data) < head_end + 4 + int(length.group(1)):
                            chunk = await reader.read(65536)
                            if not chunk:
                                break
                            data += chunk
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        return _DATE.sub("date: <date>", data.decode("latin-1").replace("\r\n", "\n"))

    async def aclose(self) -> None:
        for client in self.clients:
            await client.close()
        for server in self.servers:
            await server.stop()
            if server.process.stdout is not None:
                with contextlib.suppress(Exception):
                    await server.process.stdout.read()


Case = Callable[[CaseContext], Awaitable[Any]]


def mask(value: Any) -> Any:
    """Replace what legitimately differs between two servers with placeholders."""
    if isinstance(value, dict):
        masked = {k: mask(v) for k, v in value.items()}
        if "executorVersion" in masked and "shell" in masked:
            for name in _IMPLEMENTATION_FIELDS:
                if name in masked:
                    masked[name] = f"<{name}>"
        return masked
    if isinstance(value, list):
        return [mask(v) for v in value]
    if isinstance(value, str):
        value = _UUID.sub("<uuid>", value)
        return _PEER.sub("exec-server websocket <peer>", value)
    return value


@contextlib.asynccontextmanager
async def case_context(url: str, workdir: Path, kind: str) -> AsyncIterator[CaseContext]:
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = CaseContext(url, workdir, kind)
    try:
        yield ctx
    finally:
        await ctx.aclose()


async def observe(case: Case, url: str, workdir: Path, kind: str) -> Any:
    async with case_context(url, workdir, kind) as ctx:
        return mask(await case(ctx))
