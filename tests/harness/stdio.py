"""Drive a server over `--listen stdio`: NDJSON lines in, lines out."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any


class StdioServer:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    @classmethod
    async def start(cls, command: list[str]) -> StdioServer:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "off"},
            start_new_session=True,
        )
        return cls(process)

    async def write(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        await self.process.stdin.drain()

    async def send(self, message: dict[str, Any]) -> None:
        await self.write(json.dumps(message).encode() + b"\n")

    async def read(self, timeout: float = 10.0) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise EOFError("server closed stdout")
        self.lines.append(line.decode())
        assert line.endswith(b"\n")
        return dict(json.loads(line))

    async def read_until(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        while True:
            message = await self.read(timeout)
            if predicate(message):
                return message

    async def close_stdin(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        return await asyncio.wait_for(self.process.wait(), 10)

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
