"""Seccomp filters for bubblewrap (`bwrap --seccomp FD`), as the reference's sandbox has them.

`network_filter()` takes the network away: `socket()` of any family but AF_UNIX, and every
connect/bind/listen/accept/send call, fail with EPERM. `managed_network_filter()` is for a
managed network (the program reaches the proxy through its own network namespace): internet
sockets work, but AF_UNIX sockets (`socket`, `socketpair`) and `setns` (leaving the namespace)
fail with EPERM. Both refuse io_uring and ptrace (they could bypass the filter). Classic BPF;
other architectures than the ones listed get no filter: the caller still unshares the network
namespace, so only what is reachable in it is reachable.
"""

from __future__ import annotations

import errno
import platform
import socket
import struct

# Classic BPF opcodes.
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_RET_K = 0x06

_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_ERRNO = 0x00050000
_SECCOMP_RET_KILL_PROCESS = 0x80000000

# struct seccomp_data: nr (u32) at 0, arch (u32) at 4, args[6] (u64) from 16.
_OFFSET_NR = 0
_OFFSET_ARCH = 4
_OFFSET_ARG0_LOW = 16

_X32_SYSCALL_BIT = 0x40000000

# name -> (audit arch, {syscall: number}) ; numbers from the kernel's syscall tables.
_ARCHES: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (
        0xC000003E,
        {
            "socket": 41,
            "connect": 42,
            "accept": 43,
            "sendto": 44,
            "sendmsg": 46,
            "bind": 49,
            "listen": 50,
            "accept4": 288,
            "sendmmsg": 307,
            "ptrace": 101,
            "io_uring_setup": 425,
            "io_uring_enter": 426,
            "io_uring_register": 427,
            "socketpair": 53,
            "setns": 308,
        },
    ),
    "aarch64": (
        0xC00000B7,
        {
            "socket": 198,
            "bind": 200,
            "listen": 201,
            "accept": 202,
            "connect": 203,
            "sendto": 206,
            "sendmsg": 211,
            "accept4": 242,
            "sendmmsg": 269,
            "ptrace": 117,
            "io_uring_setup": 425,
            "io_uring_enter": 426,
            "io_uring_register": 427,
            "socketpair": 199,
            "setns": 268,
        },
    ),
}

_CUT = ("connect", "accept", "sendto", "sendmsg", "bind", "listen", "accept4", "sendmmsg")
_ALWAYS = ("ptrace", "io_uring_setup", "io_uring_enter", "io_uring_register")


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def network_filter(machine: str | None = None) -> bytes | None:
    """The no-network program (struct sock_filter array), or None if this machine is not
    covered."""
    return _program(machine, (*_CUT, *_ALWAYS), unix_only=True)


def managed_network_filter(machine: str | None = None) -> bytes | None:
    """The managed-network program, or None if this machine is not covered."""
    return _program(machine, ("socketpair", "setns", *_ALWAYS), unix_only=False)


def _program(
    machine: str | None, denied_names: tuple[str, ...], *, unix_only: bool
) -> bytes | None:
    """Deny `denied_names` with EPERM; `socket()` is allowed for AF_UNIX only (`unix_only`) or
    for every family but AF_UNIX."""
    entry = _ARCHES.get(machine or platform.machine())
    if entry is None:
        return None
    arch, numbers = entry
    eperm = _SECCOMP_RET_ERRNO | errno.EPERM
    denied = [numbers[name] for name in denied_names]
    program = [
        _insn(_LD_W_ABS, 0, 0, _OFFSET_ARCH),
        _insn(_JEQ_K, 1, 0, arch),
        _insn(_RET_K, 0, 0, _SECCOMP_RET_KILL_PROCESS),
        _insn(_LD_W_ABS, 0, 0, _OFFSET_NR),
    ]
    if arch == 0xC000003E:  # x32 syscalls would slip past the numbers below
        program += [_insn(_JGE_K, 0, 1, _X32_SYSCALL_BIT), _insn(_RET_K, 0, 0, eperm)]
    # Each denied syscall: equal -> jump to the EPERM return at the end.
    tail = len(denied) + 3  # instructions after the comparisons: socket check (2), allow (1)
    for index, number in enumerate(denied):
        program.append(_insn(_JEQ_K, tail - index - 1 + 2, 0, number))
    # socket(): its family decides. Unix-only: AF_UNIX jumps over the EPERM to the allow;
    # otherwise AF_UNIX falls through to the EPERM and the rest jump to the allow.
    program += [
        _insn(_JEQ_K, 0, 3, numbers["socket"]),
        _insn(_LD_W_ABS, 0, 0, _OFFSET_ARG0_LOW),
        _insn(_JEQ_K, 1, 0, socket.AF_UNIX) if unix_only else _insn(_JEQ_K, 0, 1, socket.AF_UNIX),
        _insn(_RET_K, 0, 0, eperm),
        _insn(_RET_K, 0, 0, _SECCOMP_RET_ALLOW),
        _insn(_RET_K, 0, 0, eperm),
    ]
    return b"".join(program)
