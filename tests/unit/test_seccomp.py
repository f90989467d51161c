"""local/sandbox/seccomp: the network filters, decoded and run by a small classic-BPF interpreter.

The program is an array of `struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}` over
`struct seccomp_data {u32 nr; u32 arch; u64 ip; u64 args[6]}`; the interpreter knows the four
instructions the filter uses and refuses anything else.
"""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

import pytest

from execserver.local.sandbox.seccomp import managed_network_filter, network_filter

LD_W_ABS = 0x20
JEQ_K = 0x15
JGE_K = 0x35
RET_K = 0x06

RET_ALLOW = 0x7FFF0000
RET_EPERM = 0x00050000 | errno.EPERM
RET_KILL_PROCESS = 0x80000000

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000

# The syscalls the filter must refuse (all but socket, which depends on its family), by
# architecture, from the kernel's syscall tables.
DENIED = {
    "x86_64": {
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
    },
    "aarch64": {
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
    },
}
SOCKET = {"x86_64": 41, "aarch64": 198}
# Syscalls that must stay allowed: read, write, openat, recvfrom, socketpair, exit_group.
ALLOWED = {
    "x86_64": [0, 1, 257, 45, 53, 231],
    "aarch64": [63, 64, 56, 207, 199, 94],
}


@dataclass(frozen=True)
class Insn:
    code: int
    jt: int
    jf: int
    k: int


def decode(program: bytes) -> list[Insn]:
    assert len(program) % 8 == 0
    return [
        Insn(*struct.unpack_from("=HBBI", program, offset)) for offset in range(0, len(program), 8)
    ]


def run(program: list[Insn], nr: int, arch: int, args: tuple[int, ...] = ()) -> int:
    """Execute the filter on one syscall; return its SECCOMP_RET_* value."""
    full_args = (*args, *([0] * (6 - len(args))))
    data = struct.pack("=IIQ6Q", nr, arch, 0, *full_args)
    acc = 0
    pc = 0
    while True:
        assert 0 <= pc < len(program), "jumped out of the program"
        insn = program[pc]
        pc += 1
        if insn.code == LD_W_ABS:
            assert insn.k % 4 == 0 and insn.k + 4 <= len(data)
            acc = struct.unpack_from("=I", data, insn.k)[0]
        elif insn.code == JEQ_K:
            pc += insn.jt if acc == insn.k else insn.jf
        elif insn.code == JGE_K:
            pc += insn.jt if acc >= insn.k else insn.jf
        elif insn.code == RET_K:
            return insn.k
        else:
            raise AssertionError(f"unexpected BPF opcode {insn.code:#x}")


@pytest.fixture(params=sorted(AUDIT_ARCH))
def machine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _program(machine: str) -> list[Insn]:
    program = network_filter(machine)
    assert program is not None
    return decode(program)


def test_seccomp_filter_checks_the_architecture_first(machine: str) -> None:
    """The first instructions load `arch` and kill the process on any other architecture."""
    program = _program(machine)
    assert program[0] == Insn(LD_W_ABS, 0, 0, 4)
    assert program[1].code == JEQ_K and program[1].k == AUDIT_ARCH[machine]
    other = next(arch for name, arch in AUDIT_ARCH.items() if name != machine)
    assert run(program, SOCKET[machine], other, (socket.AF_UNIX,)) == RET_KILL_PROCESS
    assert run(program, 0, 0x40000003, ()) == RET_KILL_PROCESS  # i386


def test_seccomp_filter_denies_network_syscalls(machine: str) -> None:
    """connect/bind/listen/accept/send*, ptrace and io_uring fail with EPERM."""
    program = _program(machine)
    for name, nr in DENIED[machine].items():
        assert run(program, nr, AUDIT_ARCH[machine]) == RET_EPERM, name


def test_seccomp_filter_allows_unix_sockets_only(machine: str) -> None:
    """socket() is allowed for AF_UNIX and fails with EPERM for every other family."""
    program = _program(machine)
    arch = AUDIT_ARCH[machine]
    assert run(program, SOCKET[machine], arch, (socket.AF_UNIX,)) == RET_ALLOW
    for family in (socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK, socket.AF_PACKET, 0):
        assert run(program, SOCKET[machine], arch, (family,)) == RET_EPERM, family
    # Only the low 32 bits of the family are compared (it is an int in the kernel ABI).
    assert run(program, SOCKET[machine], arch, ((1 << 32) | socket.AF_UNIX,)) == RET_ALLOW


def test_seccomp_filter_allows_other_syscalls(machine: str) -> None:
    """Everything else (read, write, openat, recvfrom, socketpair, exit_group) passes."""
    program = _program(machine)
    for nr in ALLOWED[machine]:
        assert run(program, nr, AUDIT_ARCH[machine]) == RET_ALLOW, nr


def test_seccomp_filter_refuses_x32_syscalls_on_x86_64() -> None:
    """On x86_64 the x32 ABI (syscall numbers with bit 30 set) is refused outright."""
    program = _program("x86_64")
    for nr in (X32_SYSCALL_BIT, X32_SYSCALL_BIT + 41, X32_SYSCALL_BIT + 0):
        assert run(program, nr, AUDIT_ARCH["x86_64"], (socket.AF_UNIX,)) == RET_EPERM


def test_seccomp_filter_jumps_stay_inside_the_program(machine: str) -> None:
    """Every conditional jump lands on an instruction, and the program ends with a return."""
    program = _program(machine)
    for index, insn in enumerate(program):
        if insn.code in (JEQ_K, JGE_K):
            assert index + 1 + max(insn.jt, insn.jf) < len(program)
    assert program[-1].code == RET_K


def test_seccomp_filter_is_none_for_other_machines() -> None:
    """Architectures without a syscall table get no filter (the network namespace remains)."""
    assert network_filter("riscv64") is None
    assert network_filter("armv7l") is None


# The managed-network filter: what it refuses beyond ptrace and io_uring, by architecture.
MANAGED_DENIED = {
    "x86_64": {"socketpair": 53, "setns": 308, "ptrace": 101, "io_uring_setup": 425},
    "aarch64": {"socketpair": 199, "setns": 268, "ptrace": 117, "io_uring_setup": 425},
}
# Internet sockets work under a managed network: connect, bind, listen, accept, send*.
MANAGED_ALLOWED = {
    "x86_64": [42, 43, 44, 46, 49, 50, 288, 307, 0, 1, 231],
    "aarch64": [203, 202, 206, 211, 200, 201, 242, 269, 63, 64, 94],
}


def _managed(machine: str) -> list[Insn]:
    program = managed_network_filter(machine)
    assert program is not None
    return decode(program)


def test_managed_filter_refuses_unix_sockets_only(machine: str) -> None:
    """socket() fails with EPERM for AF_UNIX and works for every other family."""
    program = _managed(machine)
    arch = AUDIT_ARCH[machine]
    assert run(program, SOCKET[machine], arch, (socket.AF_UNIX,)) == RET_EPERM
    assert run(program, SOCKET[machine], arch, ((1 << 32) | socket.AF_UNIX,)) == RET_EPERM
    for family in (socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK, 0):
        assert run(program, SOCKET[machine], arch, (family,)) == RET_ALLOW, family


def test_managed_filter_denies_socketpair_setns_ptrace_io_uring(machine: str) -> None:
    program = _managed(machine)
    for name, nr in MANAGED_DENIED[machine].items():
        assert run(program, nr, AUDIT_ARCH[machine]) == RET_EPERM, name


def test_managed_filter_allows_internet_socket_calls(machine: str) -> None:
    program = _managed(machine)
    for nr in MANAGED_ALLOWED[machine]:
        assert run(program, nr, AUDIT_ARCH[machine]) == RET_ALLOW, nr


def test_managed_filter_checks_the_architecture_and_x32(machine: str) -> None:
    program = _managed(machine)
    other = next(arch for name, arch in AUDIT_ARCH.items() if name != machine)
    assert run(program, SOCKET[machine], other, (socket.AF_INET,)) == RET_KILL_PROCESS
    for index, insn in enumerate(program):
        if insn.code in (JEQ_K, JGE_K):
            assert index + 1 + max(insn.jt, insn.jf) < len(program)
    if machine == "x86_64":
        assert run(program, X32_SYSCALL_BIT + 41, AUDIT_ARCH[machine], (2,)) == RET_EPERM
    assert managed_network_filter("riscv64") is None
