"""A raw JSON-RPC client for wire tests: exact frames out, every message in, nothing hidden.

Every inbound message is kept in arrival order. `request()` returns the whole response object;
`wait_for()` finds any message (response or notification) matching a predicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

Json = dict[str, Any]


def process_params(process_id: str, argv: list[str], **extra: Any) -> Json:
    """`process/start` params with test defaults (cwd /tmp, a minimal PATH, no tty)."""
    params: Json = {
        "processId": process_id,
        "argv": argv,
        "cwd": "file:///tmp",
        "env": {"PATH": "/usr/bin:/bin"},
        "tty": False,
    }
    params.update(extra)
    return params


class WireClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.messages: list[Json] = []
        self._seen = 0
        self._changed = asyncio.Condition()
        self._next_id = 1000
        self.closed = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> WireClient:
        kwargs.setdefault("max_size", None)
        kwargs.setdefault("ping_interval", None)
        ws = await websockets.connect(url, **kwargs)
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                async with self._changed:
                    self.messages.append(message)
                    self._changed.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            if not self.closed.done():
                self.closed.set_result(self.ws.close_code)
            async with self._changed:
                self._changed.notify_all()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def __aenter__(self) -> WireClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- sending -------------------------------------------------------------------------------

    async def send_raw(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def send(self, message: Json) -> None:
        await self.ws.send(json.dumps(message, separators=(",", ":")))

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def request(
        self,
        method: str,
        params: Any = None,
        *,
        request_id: Any = None,
        timeout: float = 10.0,
        omit_params: bool = False,
    ) -> Json:
        """Send a request and return the whole response object with the same id."""
        if request_id is None:
            request_id = self.new_id()
        message: Json = {"id": request_id, "method": method}
        if not omit_params:
            message["params"] = {} if params is None else params
        await self.send(message)
        return await self.response(request_id, timeout=timeout)

    async def notify(self, method: str, params: Any = None) -> None:
        message: Json = {"method": method}
        if params is not None:
            message["params"] = params
        await self.send(message)

    async def initialize(self, client_name: str = "wire-test", resume: str | None = None) -> Json:
        response = await self.request(
            "initialize", {"clientName": client_name, "resumeSessionId": resume}
        )
        if "result" in response:
            await self.notify("initialized", {})
        return response

    # -- receiving -----------------------------------------------------------------------------

    async def response(self, request_id: Any, *, timeout: float = 10.0) -> Json:
        def matches(m: Json) -> bool:
            return (
                ("result" in m or "error" in m)
                and m.get("id") == request_id
                and (type(m.get("id")) is type(request_id))
            )

        return await self.wait_for(matches, timeout=timeout)

    async def wait_for(self, predicate: Callable[[Json], bool], *, timeout: float = 10.0) -> Json:
        """First message (in arrival order, including ones already received) matching predicate."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                index = 0
                while True:
                    while index < len(self.messages):
                        if predicate(self.messages[index]):
                            return self.messages[index]
                        index += 1
                    if self.closed.done():
                        raise ConnectionError("connection closed while waiting")
                    await self._changed.wait()

    async def next_message(self, *, timeout: float = 10.0) -> Json:
        """The next message not yet returned by `next_message` (arrival order)."""
        async with asyncio.timeout(timeout):
            async with self._changed:
                while self._seen >= len(self.messages):
                    if self.closed.done():
                        raise ConnectionError("connection closed while waiting")
                    await self._changed.wait()
                self._seen += 1
                return self.messages[self._seen - 1]

    def notifications(self, method: str | None = None, **match: Any) -> list[Json]:
        found = []
        for m in self.messages:
            if "method" not in m or (method is not None and m["method"] != method):
                continue
            params = m.get("params") or {}
            if all(params.get(k) == v for k, v in match.items()):
                found.append(m)
        return found

    async def wait_closed(self, timeout: float = 5.0) -> int | None:
        """Wait for the server to drop the connection; returns the close code (1006 = abrupt)."""
        return await asyncio.wait_for(asyncio.shield(self.closed), timeout)

    async def process_events(self, process_id: str, *, timeout: float = 10.0) -> list[Json]:
        """All notifications of a process, up to and including `process/closed`."""
        await self.wait_for(
            lambda m: (
                m.get("method") == "process/closed" and m["params"]["processId"] == process_id
            ),
            timeout=timeout,
        )
        return [
            m
            for m in self.messages
            if m.get("method", "").startswith("process/")
            and m["params"].get("processId") == process_id
        ]
