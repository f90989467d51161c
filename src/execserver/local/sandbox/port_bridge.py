"""Reaching the managed proxy from a sandbox with its own network namespace, and nothing else.

A managed sandbox (`enforceManagedNetwork` with `networkProxy`) gets a fresh network namespace
holding only a loopback interface. Before the program runs, a small helper inside the sandbox
listens on 127.0.0.1 at the proxy's own port numbers (so the proxy variables of the child's
environment are right in there too) and hands those listening sockets to the executor over an
inherited socket pair (SCM_RIGHTS); then it execs the program. The executor accepts on them
like on its host listeners, so every connection the program makes to a proxy port reaches the
proxy, and any other address is unreachable (nothing else listens in the namespace). The
helper keeps no process behind; the seccomp filter of the sandbox (`managed_network_filter`)
forbids the program new AF_UNIX sockets and leaving the namespace.
"""

from __future__ import annotations

import array
import asyncio
import os
import socket
import sys
from collections.abc import Callable

BRIDGE_FD = 5
"""The socket pair's end inside the sandbox."""

# Run as `python -I -S -c HELPER FD PORTS ARG0 -- PROGRAM ARGS...` (ARG0: `-` or `=name`).
# Standard library only, no site: it starts in a few milliseconds and sees only the sandbox.
HELPER = b"""
import array, os, socket, sys
def main():
    fd, ports, arg0 = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    argv = sys.argv[5:]
    try:
        listeners = []
        for port in ports.split(","):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", int(port)))
            s.listen(128)
            listeners.append(s)
        control = socket.socket(fileno=fd)
        fds = array.array("i", [s.fileno() for s in listeners])
        control.sendmsg([b"L"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        control.close()
        for s in listeners:
            s.close()
    except OSError as exc:
        sys.stderr.write("bwrap: managed network setup failed: %s\\n" % exc.strerror)
        os._exit(1)
    try:
        os.execvp(argv[0], [arg0[1:] if arg0.startswith("=") else argv[0], *argv[1:]])
    except OSError as exc:
        sys.stderr.write("bwrap: execvp %s: %s\\n" % (argv[0], exc.strerror))
        os._exit(1)
main()
"""


class PortBridge:
    """The executor's side: the socket pair, the helper's command line, the handover."""

    def __init__(self, ports: tuple[int, ...]) -> None:
        self.ports = ports
        self._ours, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def child_fd(self) -> tuple[int, int]:
        """(our fd, its number in the child) for the spawn."""
        return self._theirs.fileno(), BRIDGE_FD

    def command(self, argv: list[bytes], arg0: bytes | None) -> list[bytes]:
        """The helper's command line that ends by exec'ing `argv` (argv[0] shown as `arg0`)."""
        return [
            os.fsencode(os.path.realpath(sys.executable)),
            b"-I",
            b"-S",
            b"-c",
            HELPER,
            str(BRIDGE_FD).encode(),
            ",".join(str(port) for port in self.ports).encode(),
            b"-" if arg0 is None else b"=" + arg0,
            b"--",
            *argv,
        ]

    def receive(self, deliver: Callable[[list[socket.socket]], None]) -> None:
        """After the spawn: close the child's end, and call `deliver` with the listening
        sockets once the helper has sent them (never, if it failed)."""
        self._theirs.close()
        self._loop = asyncio.get_running_loop()
        self._ours.setblocking(False)
        self._loop.add_reader(self._ours.fileno(), self._readable, deliver)

    def _readable(self, deliver: Callable[[list[socket.socket]], None]) -> None:
        fds = array.array("i")
        try:
            _, ancillary, _, _ = self._ours.recvmsg(
                16, socket.CMSG_SPACE(len(self.ports) * fds.itemsize)
            )
        except BlockingIOError:
            return
        except OSError:
            ancillary = []
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
        self.close()
        deliver([socket.socket(fileno=fd) for fd in fds])

    def close(self) -> None:
        """Idempotent."""
        if self._loop is not None and self._ours.fileno() >= 0:
            self._loop.remove_reader(self._ours.fileno())
        self._ours.close()
        self._theirs.close()
