"""Run filesystem operations inside the sandbox (server side of `fs_helper`).

Decides per request whether the policy needs the helper at all (reads run in-process when the
whole filesystem is readable and nothing is denied; writes when everything is writable, as the
reference decides), and otherwise starts the helper under bubblewrap, exchanges one request and
one reply, and reaps it through the server's reaper.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import functools
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

import msgspec

from execserver.errors import InternalError, InvalidParams, InvalidRequest, from_jsonrpc_error
from execserver.local.blocking import FS_WAIT_TIMEOUT_S, BlockingOp, Ready, Wait, drive_sync
from execserver.local.reaper import ChildReaper, exit_code_from_status
from execserver.local.sandbox import bwrap as bw
from execserver.local.sandbox.fs_helper import FD_SOCKET, Reply, Request
from execserver.local.sandbox.policy import (
    Mechanism,
    ResolvedPolicy,
    SandboxError,
    resolve,
)
from execserver.local.sandbox.python_view import PACKAGE_PARENT, python_paths
from execserver.local.spawn import SpawnRun, Stdio, spawn
from execserver.protocol.base import dec_hook, enc_hook
from execserver.protocol.pathuri import PathUriError
from execserver.protocol.sandbox import (
    GlobPatternPath,
    ManagedProfile,
    RestrictedFileSystem,
    SandboxContext,
    SpecialCwd,
    SpecialEntryPath,
    SpecialProjectRoots,
)

_encoder = msgspec.msgpack.Encoder(enc_hook=enc_hook)

Talk = tuple[bytes, bytes, int | None]
DriveBlocking = Callable[[BlockingOp[Talk]], Awaitable[Talk]]
"""Runs the exchange with the helper (`BlockingPool.drive` in one client's turns)."""


def _needs_cwd(context: SandboxContext) -> bool:
    permissions = context.permissions
    if not isinstance(permissions, ManagedProfile) or not isinstance(
        permissions.file_system, RestrictedFileSystem
    ):
        return False
    for entry in permissions.file_system.entries:
        path = entry.path
        if isinstance(path, SpecialEntryPath) and isinstance(
            path.value, SpecialProjectRoots | SpecialCwd
        ):
            return True
        if isinstance(path, GlobPatternPath) and not path.pattern.startswith("/"):
            return True
    return False


def fs_policy(context: SandboxContext) -> ResolvedPolicy:
    """The policy of an fs request (resolved against the sandbox cwd, else ours)."""
    if context.cwd is None and _needs_cwd(context):
        raise InvalidParams("file system sandbox context with dynamic permissions requires cwd")
    cwd = os.fsencode(os.getcwd())
    if context.cwd is not None:
        with contextlib.suppress(PathUriError):  # fs requests ignore an unusable policy cwd
            cwd = context.cwd.native_path()
    # The helper's environment holds only PATH, so a `tmpdir` entry grants nothing.
    return resolve(context, cwd, {}, strict_roots=False)


def needs_helper(policy: ResolvedPolicy, *, writes: bool) -> bool:
    if policy.mechanism is not Mechanism.FILESYSTEM:
        return False
    return policy.restricts_writes if writes else policy.restricts_reads


# `-I` keeps the user's site and environment out of the helper; the server's own import path
# (its package first, then what it imported from) is passed as arguments instead, so the helper
# runs the same code as the server even when that is not the installed copy (PYTHONPATH, a
# checkout next to an editable install).
_BOOTSTRAP = (
    b"import sys; sys.path[:0] = sys.argv[1:]; del sys.argv[1:]; "
    b"from execserver.local.sandbox.fs_helper import main; main()"
)


def _import_paths() -> list[bytes]:
    paths = [PACKAGE_PARENT, *(p for p in sys.path if p and os.path.isdir(p))]
    return [os.fsencode(p) for p in dict.fromkeys(paths)]


class SandboxedFileSystem:
    def __init__(
        self,
        reaper: ChildReaper,
        executor: Executor,
        aside: SpawnRun | None = None,
    ) -> None:
        self._reaper = reaper
        self._executor = executor
        self._aside = aside
        """Runs the helper's spawn outside any process's cgroup (`ProcessCgroups.aside`)."""

    async def call(
        self,
        policy: ResolvedPolicy,
        op: str,
        args: dict[str, Any],
        result_type: Any = None,
        *,
        drive: DriveBlocking | None = None,
        wait_timeout_s: float = FS_WAIT_TIMEOUT_S,
    ) -> Any:
        """Run `op` in a helper under `policy`; raise the operation's error as ours would.

        `drive` runs the exchange (the client's turns of the blocking pool); the helper waits
        on FIFOs, sockets and devices at most `wait_timeout_s` each time."""
        request = Request(op, args | {"wait_timeout_s": wait_timeout_s})
        reply, _ = await self._exchange(policy, request, want_fd=False, drive=drive)
        if reply.result is None or result_type is None:
            return reply.result
        return msgspec.convert(reply.result, result_type, dec_hook=dec_hook)

    async def open(
        self, policy: ResolvedPolicy, path: bytes, mode: str, *, drive: DriveBlocking | None = None
    ) -> int:
        """Open `path` inside the sandbox and return the fd (passed back over a socket)."""
        _, fd = await self._exchange(
            policy, Request("open", {"path": path, "mode": mode}), want_fd=True, drive=drive
        )
        assert fd is not None
        return fd

    async def _exchange(
        self,
        policy: ResolvedPolicy,
        request: Request,
        *,
        want_fd: bool,
        drive: DriveBlocking | None = None,
    ) -> tuple[Reply, int | None]:
        helper_policy = ResolvedPolicy(
            Mechanism.FILESYSTEM,
            network_restricted=True,
            full_read=policy.full_read,
            full_write=policy.full_write,
            minimal=True,
            readable=[*policy.readable, *python_paths()],
            writable=list(policy.writable),
            read_only=list(policy.read_only),
            denied=list(policy.denied),
            has_deny_entries=policy.has_deny_entries,
        )
        try:
            plan = bw.command(bw.locate(run=self._aside), helper_policy, chdir=b"/", seccomp=False)
        except (bw.SandboxUnavailable, SandboxError) as exc:
            raise InvalidRequest(f"failed to prepare fs sandbox: {exc}") from None
        argv = [
            *plan.args,
            os.fsencode(sys.executable),
            b"-I",
            b"-c",
            _BOOTSTRAP,
            *_import_paths(),
        ]
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[int] = loop.create_future()
        try:
            pid = spawn(
                argv[0],
                argv,
                [b"PATH=/usr/bin:/bin"],
                b"/",
                Stdio(in_r, out_w, err_w, extra_fds=((theirs.fileno(), FD_SOCKET),)),
                run=self._aside,
            )
        except OSError as exc:
            for pipe_fd in (in_r, in_w, out_r, out_w, err_r, err_w):
                os.close(pipe_fd)
            ours.close()
            theirs.close()
            plan.cleanup()
            raise InternalError(f"fs sandbox helper failed to start: {exc.strerror}") from None

        def on_exit(status: int) -> None:
            if not exited.done():
                exited.set_result(status)

        self._reaper.watch(pid, on_exit)
        for child_fd in (in_r, out_w, err_w):
            os.close(child_fd)
        theirs.close()
        try:
            talk = functools.partial(
                _talk,
                in_w,
                out_r,
                err_r,
                sock=ours,
                request=_encoder.encode(request),
                want_fd=want_fd,
            )
            if drive is None:
                out, err, fd = await loop.run_in_executor(
                    self._executor, lambda: drive_sync(talk())
                )
            else:
                out, err, fd = await drive(talk())
            status = await exited
        except BaseException:
            # Given up (the client left): the helper must not outlive the request. Not reaped
            # yet, so the pid is still this helper's (bwrap's children die with it).
            if not exited.done():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            raise
        finally:
            ours.close()
            plan.cleanup()
        try:
            reply = msgspec.msgpack.decode(out, type=Reply)
        except msgspec.DecodeError:
            code = exit_code_from_status(status)
            detail = err.decode(errors="replace").strip()
            raise InternalError(
                f"fs sandbox helper failed with status exit status: {code}: {detail}"
            ) from None
        if reply.errno is not None:
            raise OSError(reply.errno, os.strerror(reply.errno))
        if reply.code is not None:
            raise from_jsonrpc_error(reply.code, reply.message or "")
        return reply, fd


def _talk(
    stdin: int, stdout: int, stderr: int, *, sock: socket.socket, request: bytes, want_fd: bool
) -> BlockingOp[Talk]:
    """Send the request, collect stdout/stderr (and an fd), close our ends. Non-blocking: it
    waits for the helper on the event loop (`BlockingPool.drive`), so a helper that takes long
    (a FIFO it waits on, a big copy) holds no thread."""
    name = b"the fs sandbox helper"
    fds = [stdin, stdout, stderr]
    try:
        for fd in fds:
            os.set_blocking(fd, False)
        sock.setblocking(False)
        view = memoryview(request)
        while view:
            try:
                view = view[os.write(stdin, view) :]
            except BlockingIOError:
                yield Wait(stdin, Ready.WRITABLE, name, patient=True)
            except BrokenPipeError:
                break
        os.close(stdin)
        fds.remove(stdin)
        passed = None
        if want_fd:
            while True:
                try:
                    _, ancillary, _, _ = sock.recvmsg(1, socket.CMSG_SPACE(4))
                    break
                except BlockingIOError:
                    yield Wait(sock.fileno(), Ready.READABLE, name, patient=True)
            received = array.array("i")
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    received.frombytes(data[: len(data) - (len(data) % received.itemsize)])
            passed = received[0] if received else None
        out = yield from _read_to_end(stdout, name)
        err = yield from _read_to_end(stderr, name)
        return out, err, passed
    finally:
        for fd in fds:
            os.close(fd)


def _read_to_end(fd: int, name: bytes) -> BlockingOp[bytes]:
    parts: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            yield Wait(fd, Ready.READABLE, name, patient=True)
            continue
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
