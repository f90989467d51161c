"""Upgrade in place: replace the running server with a fresh image of the installed code,
killing nothing (`kill -HUP`; docs/protocol.md, "Upgrade in place").

1. Check: the state is written to a memfd and a child started from the installed code decodes
   it (`EXECSERVER_UPGRADE_CHECK`). A broken install fails here, and the old server runs on.
2. Hand over, synchronously (no event-loop turn in between, so no output is read and no child
   status collected meanwhile): snapshot again, mark the fds to keep inheritable (the
   listening socket, every process's pipes or PTY, the memfd) and `execve` the same command
   line with `EXECSERVER_UPGRADE_FD`. The pid stays, so the processes stay our children. If
   the `execve` itself fails, the fds are made close-on-exec again and the old server runs on.
3. The new image adopts the listening socket, the processes (output logs, journals, stdin
   state, handles) and the sessions, detached: connected clients saw their connection drop;
   they reconnect, resume their sessions and catch up by seq, losing and repeating nothing.

Connections, streamed HTTP bodies and open file handles do not survive (they belong to
connections). Only a WebSocket listener can be upgraded (stdio and relay mode refuse).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import sys

import msgspec

from execserver.local.handoff import (
    HostHandoff,
    TableState,
    restore_host,
    restore_table,
    snapshot_host,
    snapshot_table,
)
from execserver.local.process import LocalExecBackend
from execserver.local.sandbox import scratch
from execserver.local.spawn import Stdio, spawn
from execserver.server.app import ExecServer
from execserver.tasks import TaskOwner

log = logging.getLogger(__name__)

UPGRADE_FD_ENV = "EXECSERVER_UPGRADE_FD"
"""Set in the new image: the memfd holding the handoff."""
UPGRADE_CHECK_ENV = "EXECSERVER_UPGRADE_CHECK"
"""Set in the check child: decode the handoff on this fd and exit 0, serving nothing."""
GENERATION_ENV = "EXECSERVER_UPGRADE_GENERATION"
"""How many upgrades in place led to this image (visible in /proc/PID/environ)."""
HANDOFF_VERSION = 1
CHECK_TIMEOUT_S = 30.0
_CHECK_FD = 3


class UpgradeFailed(Exception):
    """The upgrade did not happen; the running server is unchanged."""


class SessionState(msgspec.Struct, kw_only=True):
    id: str
    principal: str
    table: TableState


class ServerHandoff(msgspec.Struct, kw_only=True):
    version: int
    listen_fds: list[int]
    sessions: list[SessionState]
    host: HostHandoff
    state_dir: str | None
    own_state_dir: bool
    """Whether the server made `state_dir` (and removes it when it finally stops)."""
    sandbox_scratch: str | None = None
    """The sandboxes' scratch directory (local/sandbox/scratch.py), reused by the new image."""

    def fds(self) -> list[int]:
        return sorted({*self.listen_fds, *self.host.fds()})


def snapshot(server: ExecServer, *, state_dir: str | None, own_state_dir: bool) -> ServerHandoff:
    sessions = []
    for session in server.registry.sessions():
        table = session.processes
        assert isinstance(table, LocalExecBackend)
        sessions.append(
            SessionState(id=session.id, principal=session.principal, table=snapshot_table(table))
        )
    return ServerHandoff(
        version=HANDOFF_VERSION,
        listen_fds=server.listening_fds(),
        sessions=sessions,
        host=snapshot_host(server.host),
        state_dir=state_dir,
        own_state_dir=own_state_dir,
        sandbox_scratch=scratch.current_scratch(),
    )


def decode(data: bytes) -> ServerHandoff:
    """Raises `UpgradeFailed` for a handoff this code cannot take."""
    try:
        handoff = msgspec.msgpack.decode(data, type=ServerHandoff)
    except msgspec.DecodeError as exc:
        raise UpgradeFailed(f"unreadable upgrade handoff: {exc}") from None
    if handoff.version != HANDOFF_VERSION:
        raise UpgradeFailed(f"upgrade handoff version {handoff.version} is not {HANDOFF_VERSION}")
    return handoff


def read_fd(fd: int) -> bytes:
    """The whole content of the memfd `fd`, which is closed."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        parts = []
        while chunk := os.read(fd, 1 << 20):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("execserver-upgrade")
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return fd


def restore(server: ExecServer, handoff: ServerHandoff) -> None:
    """Take over the processes and sessions of the previous image (synchronously, before the
    loop runs anything else). The listener is adopted separately (`adopt_listener`)."""
    if handoff.sandbox_scratch is not None:
        scratch.adopt_scratch(handoff.sandbox_scratch)
    processes = restore_host(server.host, handoff.host)
    for state in handoff.sessions:
        session = server.registry.adopt(state.id, state.principal)
        table = session.processes
        assert isinstance(table, LocalExecBackend)
        restore_table(table, state.table, processes)
        session.detach(server.registry)
    log.info(
        "upgraded in place",
        extra={"processes": len(processes), "sessions": len(handoff.sessions)},
    )


async def adopt_listener(
    server: ExecServer, handoff: ServerHandoff, *, tls: ssl.SSLContext | None = None
) -> None:
    """Serve WebSocket connections on the listening socket(s) of the previous image (with TLS
    when the listener is `wss://`: the certificate is loaded again from its files)."""
    for fd in handoff.listen_fds:
        os.set_inheritable(fd, False)
        sock = socket.socket(fileno=fd)
        await server.listen_websocket("", 0, sock=sock, tls=tls)


class Upgrader:
    """Runs upgrades of one server, one at a time (`request()` from the SIGHUP handler)."""

    def __init__(
        self,
        server: ExecServer,
        *,
        state_dir: str | None,
        own_state_dir: bool,
        generation: int = 0,
    ) -> None:
        self._server = server
        self.generation = generation
        """Upgrades in place that led to this image."""
        self._state_dir = state_dir
        self._own_state_dir = own_state_dir
        self._tasks = TaskOwner("upgrade in place")

    def install(self) -> None:
        """Upgrade on SIGHUP (one sent while this image started is handled now)."""
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.request)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})

    def request(self) -> None:
        """Start an upgrade (SIGHUP), unless one is in progress."""
        if len(self._tasks):
            log.warning("upgrade in place already in progress")
        elif not self._tasks.closed:
            self._tasks.spawn(self._upgrade())

    async def aclose(self) -> None:
        """Stop upgrading on SIGHUP; cancel an upgrade still checking (the handover itself is
        never interrupted)."""
        asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await self._tasks.aclose()

    async def _upgrade(self) -> None:
        try:
            if self._server.is_stdio or not self._server.listening_fds():
                raise UpgradeFailed("upgrade in place needs a WebSocket listener")
            await self._check()
            self._hand_over()
        except UpgradeFailed as exc:
            log.error("upgrade in place failed; this server runs on: %s", exc)
        except Exception:
            log.exception("upgrade in place failed; this server runs on")

    def _snapshot(self) -> tuple[ServerHandoff, int]:
        """The handoff, and a memfd holding it."""
        handoff = snapshot(
            self._server, state_dir=self._state_dir, own_state_dir=self._own_state_dir
        )
        return handoff, _memfd(msgspec.msgpack.encode(handoff))

    async def _check(self) -> None:
        """Let the installed code read the handoff in a child; raises `UpgradeFailed`."""
        _, fd = self._snapshot()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[int] = loop.create_future()
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            env = {**os.environ, UPGRADE_CHECK_ENV: str(_CHECK_FD)}
            env.pop(UPGRADE_FD_ENV, None)
            pid = spawn(
                os.fsencode(sys.executable),
                [os.fsencode(arg) for arg in _command()],
                [os.fsencode(f"{k}={v}") for k, v in env.items()],
                os.fsencode(os.getcwd()),
                Stdio(stdout=devnull, stderr=2, extra_fds=((fd, _CHECK_FD),)),
            )
        except OSError as exc:
            raise UpgradeFailed(f"cannot start the installed code: {exc}") from None
        finally:
            os.close(devnull)
            os.close(fd)

        def exited(status: int) -> None:
            if not done.done():
                done.set_result(os.waitstatus_to_exitcode(status))

        self._server.host.reaper.watch(pid, exited)
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                code = await done
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
            raise UpgradeFailed(
                f"the installed code did not answer within {CHECK_TIMEOUT_S:g} s"
            ) from None
        if code != 0:
            raise UpgradeFailed(f"the installed code cannot take over (check exited {code})")

    def _hand_over(self) -> None:
        """Snapshot and `execve` (does not return); raises `UpgradeFailed` if the `execve`
        fails, with everything as it was."""
        handoff, fd = self._snapshot()
        kept = [*handoff.fds(), fd]
        for kept_fd in kept:
            os.set_inheritable(kept_fd, True)
        generation = self.generation + 1
        env = {**os.environ, UPGRADE_FD_ENV: str(fd), GENERATION_ENV: str(generation)}
        log.info("upgrading in place", extra={"generation": generation})
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        # The signal mask and pending signals survive execve: a SIGHUP while the new image
        # starts stays pending (instead of killing it) until it handles SIGHUP (`install()`).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        try:
            os.execve(sys.executable, _command(), env)
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
            for kept_fd in kept:
                with contextlib.suppress(OSError):
                    os.set_inheritable(kept_fd, False)
            os.close(fd)
            raise UpgradeFailed(f"execve of {sys.executable} failed: {exc}") from None


def _command() -> list[str]:
    """This process's command line, to start the installed code the same way."""
    return [sys.executable, *sys.orig_argv[1:]]


def check(fd: int) -> int:
    """The check child's work: 0 if this code can take the handoff on `fd`."""
    try:
        decode(read_fd(fd))
    except UpgradeFailed as exc:
        print(f"execserver: {exc}", file=sys.stderr)
        return 1
    return 0
