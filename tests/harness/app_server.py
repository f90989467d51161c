"""Drive the real `codex app-server` (stdio JSON-RPC) for end-to-end tests.

    async with AppServer.start(codex_home, cwd) as app:
        await app.call("environment/add", {"environmentId": "remote", "execServerUrl": url})
        thread_id = await app.start_thread("remote", "/srv/work")
        turn = await app.run_turn(thread_id, "do it")
        turn.status, turn.items, turn.notifications

Requests the app-server makes of its client (approvals and the like) are declined and
recorded in `server_requests`, so a scenario that unexpectedly asks for approval fails
instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.servers import REFERENCE_VERSION, reference_binary


class AppServerError(Exception):
    pass


@dataclass
class Turn:
    """What the app-server reported about one turn, from `turn/started` to `turn/completed`."""

    id: str
    status: str
    error: Any
    notifications: list[dict[str, Any]] = field(default_factory=list)

    def completed_items(self, item_type: str) -> list[dict[str, Any]]:
        return [
            n["params"]["item"]
            for n in self.notifications
            if n["method"] == "item/completed" and n["params"]["item"]["type"] == item_type
        ]

    def output_deltas(self, item_id: str) -> str:
        return "".join(
            n["params"]["delta"]
            for n in self.notifications
            if n["method"] == "item/commandExecution/outputDelta"
            and n["params"]["itemId"] == item_id
        )


class AppServer:
    def __init__(self, process: asyncio.subprocess.Process, stderr_path: Path) -> None:
        self.process = process
        self.stderr_path = stderr_path
        self.notifications: list[dict[str, Any]] = []
        self.server_requests: list[dict[str, Any]] = []
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls,
        codex_home: Path,
        cwd: Path,
        extra_env: dict[str, str] | None = None,
        *,
        version: str = REFERENCE_VERSION,
    ) -> AsyncIterator[AppServer]:
        binary = reference_binary(version)
        assert binary is not None, f"the reference codex {version} binary is not installed"
        # The app-server must not see what only the executor sees (the scenarios check that
        # commands ran there by an environment variable the executor alone has).
        env = {k: v for k, v in os.environ.items() if not k.startswith("E2E_")}
        env.update(CODEX_HOME=str(codex_home), RUST_LOG="warn")
        env.update(extra_env or {})
        stderr_path = codex_home / "app-server.stderr"
        with open(stderr_path, "wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                str(binary),
                "app-server",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=env,
                cwd=str(cwd),
                start_new_session=True,
                limit=64 << 20,
            )
        app = cls(process, stderr_path)
        try:
            await app.call(
                "initialize",
                {
                    "clientInfo": {"name": "execserver-e2e", "version": "0"},
                    "capabilities": {"experimentalApi": True},
                },
            )
            await app.notify("initialized")
            yield app
        finally:
            await app.close()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    async def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def _send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        await self.process.stdin.drain()

    async def notify(self, method: str, params: Any = None) -> None:
        message: dict[str, Any] = {"method": method}
        if params is not None:
            message["params"] = params
        await self._send(message)

    async def call(self, method: str, params: Any, timeout: float = 60.0) -> Any:
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        await self._send({"id": request_id, "method": method, "params": params})
        try:
            response = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise AppServerError(f"{method}: no answer in {timeout} s\n{self.stderr()}") from None
        if "error" in response:
            raise AppServerError(f"{method}: {response['error']}")
        return response["result"]

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            message = json.loads(line)
            if "id" in message and ("result" in message or "error" in message):
                future = self._pending.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
            elif "id" in message:
                self.server_requests.append(message)
                await self._send(
                    {
                        "id": message["id"],
                        "error": {"code": -32601, "message": "the e2e client declines"},
                    }
                )
            else:
                async with self._changed:
                    self.notifications.append(message)
                    self._changed.notify_all()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(AppServerError(f"app-server exited\n{self.stderr()}"))

    async def wait_notification(
        self, method: str, timeout: float = 60.0, start: int = 0, **match: Any
    ) -> dict[str, Any]:
        """The first notification from index `start` on with `method` and params matching."""

        def find() -> dict[str, Any] | None:
            for note in self.notifications[start:]:
                params = note.get("params") or {}
                if note["method"] == method and all(params.get(k) == v for k, v in match.items()):
                    return note
            return None

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: find() is not None)
        found = find()
        assert found is not None
        return found

    async def start_thread(
        self, environment_id: str, cwd: str, sandbox: str = "danger-full-access"
    ) -> str:
        result = await self.call(
            "thread/start",
            {
                "environments": [{"environmentId": environment_id, "cwd": cwd}],
                "approvalPolicy": "never",
                "sandbox": sandbox,
            },
        )
        thread_id: str = result["thread"]["id"]
        return thread_id

    async def run_turn(self, thread_id: str, text: str, timeout: float = 90.0) -> Turn:
        mark = len(self.notifications)
        result = await self.call(
            "turn/start", {"threadId": thread_id, "input": [{"type": "text", "text": text}]}
        )
        turn_id = result["turn"]["id"]
        done = await self.wait_notification(
            "turn/completed", timeout=timeout, start=mark, threadId=thread_id
        )
        turn = done["params"]["turn"]
        assert turn["id"] == turn_id
        notes = [
            n
            for n in self.notifications[mark:]
            if (n.get("params") or {}).get("threadId") == thread_id
        ]
        return Turn(turn_id, turn["status"], turn.get("error"), notes)


__all__ = ["AppServer", "AppServerError", "Turn"]
