"""Everything needed to start one sandboxed program: the bwrap prefix, the seccomp program, and
what to clean up afterwards. `prepare()` returns None when the intent restricts nothing.

With a `PortBridge` (a managed network) the program always runs in a network namespace of its
own, whatever the profile says about the network, under the managed-network seccomp filter,
behind the bridge's helper; a view without the host's root gains the Python installation the
helper runs with (and the minimal system directories)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass

from execserver.local.sandbox import bwrap as bw
from execserver.local.sandbox.policy import Mechanism, ResolvedPolicy, resolve
from execserver.local.sandbox.port_bridge import PortBridge
from execserver.local.sandbox.python_view import python_paths
from execserver.local.sandbox.seccomp import managed_network_filter, network_filter
from execserver.local.spawn import SpawnRun
from execserver.protocol.sandbox import SandboxContext


@dataclass(slots=True)
class SandboxLaunch:
    """bwrap's argv up to `--`; fds the child must inherit; cleanup for after the run."""

    prefix: list[bytes]
    extra_fds: tuple[tuple[int, int], ...]
    plan: bw.MountPlan
    _owned_fds: tuple[int, ...]
    argv0_supported: bool
    bridge: PortBridge | None = None

    def command(self, argv: list[bytes], arg0: bytes | None) -> list[bytes]:
        """The full command line running `argv` (shown as `arg0` where that is possible)."""
        if self.bridge is not None:
            return [*self.prefix, *self.bridge.command(argv, arg0)]
        prefix = [*self.prefix]
        if arg0 is not None and self.argv0_supported:
            prefix[-1:-1] = [b"--argv0", arg0]
        return [*prefix, *argv]

    def close(self) -> None:
        for fd in self._owned_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._owned_fds = ()
        if self.bridge is not None:
            self.bridge.close()
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


def managed_network_policy(policy: ResolvedPolicy) -> ResolvedPolicy:
    """`policy` with its own network namespace, and what the bridge's helper needs to see."""
    mechanism = Mechanism.NETWORK_ONLY if policy.mechanism is Mechanism.PLAIN else policy.mechanism
    managed = dataclasses.replace(policy, mechanism=mechanism, network_restricted=True)
    if mechanism is Mechanism.FILESYSTEM and not managed.full_read:
        managed.readable = [*managed.readable, *python_paths()]
        managed.minimal = True
    return managed


def with_readable(policy: ResolvedPolicy, path: bytes) -> ResolvedPolicy:
    """`policy` that also lets the program read `path` (when it restricts reads at all)."""
    if policy.mechanism is not Mechanism.FILESYSTEM or policy.full_read:
        return policy
    return dataclasses.replace(policy, readable=[*policy.readable, path])


def prepare(
    policy: ResolvedPolicy,
    cwd: bytes,
    *,
    bridge: PortBridge | None = None,
    probe_run: SpawnRun | None = None,
) -> SandboxLaunch | None:
    """Plan one run under `policy` (None when it restricts nothing and there is no `bridge`);
    raises `SandboxUnavailable` (refuse) or `SandboxError`. `probe_run` spawns bubblewrap's
    first probe (`bwrap.locate`)."""
    if bridge is not None:
        policy = managed_network_policy(policy)
    if policy.mechanism is Mechanism.PLAIN:
        return None
    binary = bw.locate(run=probe_run)
    if bridge is not None:
        program = managed_network_filter()
    else:
        program = network_filter() if policy.network_restricted else None
    plan = bw.command(
        binary,
        policy,
        chdir=visible_cwd(policy, cwd),
        seccomp=program is not None,
        own_user=bridge is not None,
    )
    owned: tuple[int, ...] = ()
    extra: tuple[tuple[int, int], ...] = ()
    if program is not None:
        memfd = os.memfd_create("execserver-seccomp", os.MFD_CLOEXEC)
        os.write(memfd, program)
        os.lseek(memfd, 0, os.SEEK_SET)
        owned = (memfd,)
        extra = ((memfd, bw.SECCOMP_FD),)
    if bridge is not None:
        extra = (*extra, bridge.child_fd)
    return SandboxLaunch(plan.args, extra, plan, owned, binary.has_argv0, bridge)
