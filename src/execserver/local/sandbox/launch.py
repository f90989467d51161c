"""Everything needed to start one sandboxed program: the bwrap prefix, the seccomp program, and
what to clean up afterwards. `prepare()` returns None when the intent restricts nothing."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from execserver.local.sandbox import bwrap as bw
from execserver.local.sandbox.policy import Mechanism, ResolvedPolicy, resolve
from execserver.local.sandbox.seccomp import network_filter
from execserver.protocol.sandbox import SandboxContext


@dataclass(slots=True)
class SandboxLaunch:
    """bwrap's argv up to `--`; fds the child must inherit; cleanup for after the run."""

    prefix: list[bytes]
    extra_fds: tuple[tuple[int, int], ...]
    plan: bw.MountPlan
    _owned_fds: tuple[int, ...]
    argv0_supported: bool

    def close(self) -> None:
        for fd in self._owned_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._owned_fds = ()
        self.plan.cleanup()


def visible_cwd(policy: ResolvedPolicy, cwd: bytes) -> bytes:
    """`cwd` if it exists in the sandbox's view, else `/` (where the reference starts it).

    Inside a bound path, or an ancestor of one (bwrap creates the parents of mount points).
    """
    if policy.mechanism is not Mechanism.FILESYSTEM or policy.full_read:
        return cwd
    roots = [*policy.readable, *policy.writable]
    if policy.minimal:
        roots += [b"/bin", b"/etc", b"/lib", b"/lib64", b"/sbin", b"/usr"]
    for root in roots:
        if cwd == root or cwd.startswith(root.rstrip(b"/") + b"/"):
            return cwd
        if root.startswith(cwd.rstrip(b"/") + b"/"):
            return cwd
    return b"/"


def resolve_policy(context: SandboxContext, cwd: bytes, env: Mapping[str, str]) -> ResolvedPolicy:
    """The intent in host paths; raises `SandboxError` when it cannot be expressed."""
    return resolve(context, cwd, env)


def prepare(policy: ResolvedPolicy, cwd: bytes) -> SandboxLaunch | None:
    """Plan one run under `policy` (None when it restricts nothing); raises
    `SandboxUnavailable` (refuse) or `SandboxError`."""
    if policy.mechanism is Mechanism.PLAIN:
        return None
    binary = bw.locate()
    program = network_filter() if policy.network_restricted else None
    plan = bw.command(binary, policy, chdir=visible_cwd(policy, cwd), seccomp=program is not None)
    owned: tuple[int, ...] = ()
    extra: tuple[tuple[int, int], ...] = ()
    if program is not None:
        memfd = os.memfd_create("execserver-seccomp", os.MFD_CLOEXEC)
        os.write(memfd, program)
        os.lseek(memfd, 0, os.SEEK_SET)
        owned = (memfd,)
        extra = ((memfd, bw.SECCOMP_FD),)
    return SandboxLaunch(plan.args, extra, plan, owned, binary.has_argv0)
