"""Which process is on the other end of a loopback TCP connection, and is it one of ours?

The executor's loopback listener needs no credential (the orchestrator that started it
connects), so a process the executor itself started (a command with network access, even
inside a sandbox that keeps the host network) could connect and drive the executor outside
its sandbox. `started_by_us()` finds the peer's socket (its inode) with one netlink sock_diag
lookup (or in /proc/net/tcp{,6} where netlink is missing), then
looks for that inode among the open files of our own descendants (orphans are ours too: the
server is their subreaper) and of the processes in our per-process cgroups, when those are
used. Cost: one netlink round trip plus /proc reads proportional to our own process tree.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path


def _address(text: str) -> tuple[bytes, int]:
    """An address of /proc/net/tcp (`0100007F:1F90`: 32-bit words in host order, port)."""
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return raw, int(port, 16)


def _packed(address: tuple[str, int] | tuple[str, int, int, int]) -> tuple[bytes, int]:
    return ipaddress.ip_address(address[0]).packed, address[1]


_SOCK_DIAG_BY_FAMILY = 20
_NETLINK_SOCK_DIAG = 4
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_NO_COOKIE = b"\xff" * 8


def _diag_request(peer: tuple[bytes, int], local: tuple[bytes, int]) -> bytes:
    """An exact-match sock_diag request for the TCP socket `peer` -> `local`."""
    family = socket.AF_INET6 if len(peer[0]) == 16 else socket.AF_INET
    sockid = (
        struct.pack("!HH", peer[1], local[1])
        + peer[0].ljust(16, b"\0")
        + local[0].ljust(16, b"\0")
        + struct.pack("=I", 0)
        + _NO_COOKIE
    )
    body = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, 0, 0xFFFFFFFF) + sockid
    return struct.pack("=IHHII", 16 + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0) + body


def _diag_inode(peer: tuple[bytes, int], local: tuple[bytes, int]) -> int | None:
    """The socket's inode through netlink sock_diag (one exact lookup, no table walk)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(1.0)
        nl.send(_diag_request(peer, local))
        reply = nl.recv(8192)
    if len(reply) < 16:
        return None
    _, kind = struct.unpack_from("=IH", reply)
    if kind == _NLMSG_ERROR or len(reply) < 16 + 72:
        return None
    # inet_diag_msg: family, state, timer, retrans (4), sockid (48), expires, rqueue, wqueue,
    # uid (16), inode
    (inode,) = struct.unpack_from("=I", reply, 16 + 68)
    return inode or None


def _table_inode(want: tuple[tuple[bytes, int], tuple[bytes, int]]) -> int | None:
    """The same from /proc/net/tcp{,6} (where netlink is not available)."""
    table = "/proc/net/tcp6" if len(want[0][0]) == 16 else "/proc/net/tcp"
    with open(table, encoding="ascii") as f:
        next(f, None)  # the header
        for line in f:
            fields = line.split()
            if len(fields) > 9 and (_address(fields[1]), _address(fields[2])) == want:
                return int(fields[9]) or None
    return None


def socket_inode(peer: tuple[str, int], local: tuple[str, int]) -> int | None:
    """The inode of the socket whose local end is `peer` and remote end `local` (ours)."""
    want = (_packed(peer), _packed(local))
    try:
        return _diag_inode(*want)
    except OSError:
        pass
    try:
        return _table_inode(want)
    except (OSError, ValueError):
        return None


def _children(pid: int) -> Iterator[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for task in tasks:
        with contextlib.suppress(OSError, ValueError):
            yield from map(int, Path(f"/proc/{pid}/task/{task}/children").read_text().split())


def descendants(root: int) -> Iterator[int]:
    """Our process tree below `root`, walked through the kernel's children lists."""
    seen = {root}
    stack = [root]
    while stack:
        for child in _children(stack.pop()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
                yield child


def cgroup_members(bases: Iterable[Path]) -> Iterator[int]:
    """Processes in the per-process cgroups below `bases` (none when cgroups are off)."""
    for base in bases:
        with contextlib.suppress(OSError):
            for procs in base.glob("*/cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    yield from map(int, procs.read_text().split())


def holds_socket(pid: int, inode: int) -> bool:
    target = f"socket:[{inode}]"
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
    return False


def is_loopback(address: object) -> bool:
    if not isinstance(address, tuple) or not address:
        return False
    try:
        ip = ipaddress.ip_address(address[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def started_by_us(
    peer: tuple[str, int], local: tuple[str, int], extra: Iterable[int] = ()
) -> int | None:
    """The pid of the peer if it is a process this server started (a descendant, or one of
    `extra`, the members of our cgroups); None otherwise."""
    if not (is_loopback(peer) and is_loopback(local)):
        return None
    inode = socket_inode(peer, local)
    if inode is None:
        return None
    me = os.getpid()
    for pid in (*descendants(me), *extra):
        if pid != me and holds_socket(pid, inode):
            return pid
    return None
