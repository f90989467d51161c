"""Turn portable sandbox intent into concrete paths on this host (PROTOCOL.md §9).

The result says what the sandboxed program may read and write and whether it keeps the
network, in host paths: special paths are resolved (workspace roots, TMPDIR, /tmp, the minimal
system view), globs are expanded, symlinked roots are resolved to their targets, missing roots
are dropped, and the protected metadata names directly under each writable root are listed.
A `root` write entry makes `/` a writable root: alone (or with more write entries) nothing is
restricted, but with deny entries or read entries (which keep those paths read-only) the
filesystem view is built like any other, `/dev` and the protected names included.
Nothing here runs anything.
"""

from __future__ import annotations

import enum
import glob
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field

from execserver.protocol.pathuri import PathUri, PathUriError
from execserver.protocol.sandbox import (
    Access,
    DisabledProfile,
    ExternalProfile,
    GlobPatternPath,
    ManagedProfile,
    PathEntryPath,
    RestrictedFileSystem,
    SandboxContext,
    SpecialCwd,
    SpecialEntryPath,
    SpecialMinimal,
    SpecialProjectRoots,
    SpecialRoot,
    SpecialSlashTmp,
    SpecialTmpdir,
)

# Names kept read-only directly under every writable root (repository and agent metadata).
PROTECTED_NAMES = (b".git", b".codex", b".agents", b".aws")
# What the `minimal` view shows of the host, read-only.
MINIMAL_PATHS = (b"/bin", b"/etc", b"/lib", b"/lib64", b"/sbin", b"/usr")
DEFAULT_GLOB_DEPTH = 64


class Mechanism(enum.Enum):
    """How a policy is enforced."""

    PLAIN = "plain"  # nothing to restrict: run directly
    NETWORK_ONLY = "network-only"  # full filesystem, network taken away
    FILESYSTEM = "filesystem"  # a restricted view of the filesystem (bubblewrap)


@dataclass(slots=True)
class ResolvedPolicy:
    mechanism: Mechanism
    network_restricted: bool
    full_read: bool = False
    full_write: bool = False
    minimal: bool = False
    readable: list[bytes] = field(default_factory=list)
    writable: list[bytes] = field(default_factory=list)
    read_only: list[bytes] = field(default_factory=list)
    """Paths inside writable roots kept read-only: protected names, and read entries as given
    (not resolved, so that a symlink on the way can be refused when the mounts are planned)."""
    denied: list[bytes] = field(default_factory=list)
    has_deny_entries: bool = False

    @property
    def restricts_reads(self) -> bool:
        return not self.full_read or self.has_deny_entries

    @property
    def restricts_writes(self) -> bool:
        # With `/` writable, denied paths and read-only paths are still off limits.
        return not self.full_write or self.has_deny_entries or bool(self.read_only)


class SandboxError(Exception):
    """The intent cannot be turned into an enforceable policy; `str()` is the detail."""


class SandboxPathError(SandboxError):
    """A path in the intent is not valid on this host. `what` names the member
    (`permission path`, `workspace root`, `policy cwd`), `detail` the PathUri message."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"invalid sandbox {what}: {detail}")
        self.what = what
        self.detail = detail


def _native(uri: PathUri, what: str) -> bytes:
    try:
        return uri.native_path()
    except PathUriError as exc:
        raise SandboxPathError(what, exc.message) from None


def _plain_relative(subpath: str) -> bool:
    parts = [p for p in subpath.split("/") if p]
    return bool(parts) and not subpath.startswith("/") and all(p not in (".", "..") for p in parts)


def resolve(
    context: SandboxContext,
    process_cwd: bytes,
    env: Mapping[str, str] | None = None,
    *,
    strict_roots: bool = True,
) -> ResolvedPolicy:
    """Resolve `context` for a program started in `process_cwd` with environment `env`.

    Raises `SandboxPathError` for paths invalid on this host; with `strict_roots=False` (fs
    requests), invalid workspace roots and policy cwd are ignored, as the reference does.
    """
    permissions = context.permissions
    if isinstance(permissions, DisabledProfile):
        return ResolvedPolicy(Mechanism.PLAIN, network_restricted=False)
    network_restricted = permissions.network == "restricted"
    if isinstance(permissions, ExternalProfile) or not isinstance(
        permissions.file_system, RestrictedFileSystem
    ):
        mechanism = Mechanism.NETWORK_ONLY if network_restricted else Mechanism.PLAIN
        return ResolvedPolicy(mechanism, network_restricted, full_read=True, full_write=True)
    assert isinstance(permissions, ManagedProfile)
    return _resolve_restricted(
        context,
        permissions.file_system,
        network_restricted=network_restricted,
        process_cwd=process_cwd,
        env=env or {},
        strict_roots=strict_roots,
    )


def _resolve_restricted(
    context: SandboxContext,
    file_system: RestrictedFileSystem,
    *,
    network_restricted: bool,
    process_cwd: bytes,
    env: Mapping[str, str],
    strict_roots: bool,
) -> ResolvedPolicy:
    policy = ResolvedPolicy(Mechanism.FILESYSTEM, network_restricted)
    workspace_roots = []
    for root_uri in context.workspace_roots:
        try:
            workspace_roots.append(_native(root_uri, "workspace root"))
        except SandboxPathError:
            if strict_roots:
                raise
    policy_cwd = process_cwd
    if context.cwd is not None:
        try:
            policy_cwd = _native(context.cwd, "policy cwd")
        except SandboxPathError:
            if strict_roots:
                raise
    grants: list[tuple[bytes, Access]] = []
    for entry in file_system.entries:
        target = entry.path
        access = entry.access
        if isinstance(target, PathEntryPath):
            grants.append((_native(target.path, "permission path"), access))
        elif isinstance(target, GlobPatternPath):
            if access in ("deny", "none"):
                policy.has_deny_entries = True
                depth = file_system.glob_scan_max_depth or DEFAULT_GLOB_DEPTH
                policy.denied += _expand_glob(target.pattern, policy_cwd, depth)
        elif isinstance(target, SpecialEntryPath):
            value = target.value
            if isinstance(value, SpecialRoot):
                if access == "write":
                    policy.full_read = policy.full_write = True
                    grants.append((b"/", access))
                elif access == "read":
                    policy.full_read = True
                else:
                    policy.has_deny_entries = True
                    grants.append((b"/", access))
            elif isinstance(value, SpecialMinimal):
                policy.minimal = True
            elif isinstance(value, SpecialProjectRoots | SpecialCwd):
                subpath = value.subpath if isinstance(value, SpecialProjectRoots) else None
                for root in workspace_roots:
                    if subpath is None:
                        grants.append((root, access))
                    elif _plain_relative(subpath):
                        grants.append(
                            (os.path.join(root, os.fsencode(subpath.rstrip("/"))), access)
                        )
            elif isinstance(value, SpecialTmpdir):
                tmpdir = env.get("TMPDIR")
                if tmpdir:
                    grants.append((os.fsencode(tmpdir), access))
            elif isinstance(value, SpecialSlashTmp):
                grants.append((b"/tmp", access))
    reads: list[tuple[bytes, bytes]] = []
    for path, access in grants:
        if access in ("deny", "none"):
            policy.has_deny_entries = True
            policy.denied.append(os.path.normpath(path))
            continue
        real = os.path.realpath(path)
        if not os.path.exists(real):
            continue  # a missing root grants nothing
        if access == "write":
            _check_no_escaping_symlink(path)
            policy.writable.append(real)
        else:
            policy.readable.append(real)
            reads.append((os.path.normpath(path), real))
    if policy.full_write and not policy.has_deny_entries and not reads:
        # `root` writable and nothing taken away: the filesystem is not restricted at all.
        policy.mechanism = Mechanism.NETWORK_ONLY if network_restricted else Mechanism.PLAIN
        return policy
    # A read grant inside a writable root keeps that part read-only. Named as given when the
    # name itself is inside the root, so that a symlink on the way is refused, not followed.
    for given, real in reads:
        if any(_under(given, root) for root in policy.writable):
            policy.read_only.append(given)
        elif any(_under(real, root) for root in policy.writable):
            policy.read_only.append(real)
    for root in policy.writable:
        if not os.path.isdir(root):
            continue  # a single writable file has no metadata beneath it
        for name in PROTECTED_NAMES:
            policy.read_only.append(os.path.join(root, name))
            policy.read_only += _gitdir_target(os.path.join(root, name))
    return policy


def _check_no_escaping_symlink(path: bytes) -> None:
    """Refuse a writable grant that passes through a symlink leading out of the directory the
    symlink is in: a sandboxed run that could write `work` may have planted `work/build ->
    /outside`, and a later grant of `work/build` must not make `/outside` writable. Symlinks
    that stay inside their directory (`/lib -> usr/lib`, `build -> build-x86`) are followed."""
    current = b"/"
    for part in [p for p in os.path.normpath(path).split(b"/") if p]:
        candidate = os.path.join(current, part)
        try:
            is_link = stat.S_ISLNK(os.lstat(candidate).st_mode)
        except OSError:
            return  # missing below here: nothing to follow
        if is_link:
            target = os.path.realpath(candidate)
            if not _under(target, current):
                raise SandboxError(
                    f"writable root `{os.fsdecode(path)}` passes through the symlink "
                    f"`{os.fsdecode(candidate)}`, which leads out of its directory to "
                    f"`{os.fsdecode(target)}`; grant the target path itself"
                )
            candidate = target
        current = candidate


def _under(path: bytes, root: bytes) -> bool:
    return path == root or path.startswith(root.rstrip(b"/") + b"/")


def _gitdir_target(dot_git: bytes) -> list[bytes]:
    """A `.git` file (worktree, submodule) points at the real git dir, which is protected too."""
    try:
        if not stat.S_ISREG(os.lstat(dot_git).st_mode):
            return []
        with open(dot_git, "rb") as f:
            first = f.readline(4096).strip()
    except OSError:
        return []
    if not first.startswith(b"gitdir:"):
        return []
    target = first[len(b"gitdir:") :].strip()
    return [os.path.realpath(os.path.join(os.path.dirname(dot_git), target))]


def _expand_glob(pattern: str, cwd: bytes, max_depth: int) -> list[bytes]:
    """Regular files matching `pattern` (relative patterns against `cwd`), at most
    `max_depth` components below the pattern's literal prefix."""
    absolute = pattern if pattern.startswith("/") else os.path.join(os.fsdecode(cwd), pattern)
    literal = []
    for part in absolute.split("/"):
        if any(ch in part for ch in "*?["):
            break
        literal.append(part)
    prefix = "/".join(literal) or "/"
    if prefix == "/" or "{" in pattern:
        # Brace alternatives are not expanded, and a pattern rooted at `/` would scan the host:
        # refuse rather than enforce less than asked.
        raise SandboxError(
            f"unreadable glob `{pattern}` cannot be safely expanded; use a pattern with a "
            "non-root directory prefix"
        )
    prefix_depth = prefix.rstrip("/").count("/")
    matches = []
    for match in glob.iglob(absolute, recursive=True):
        if match.rstrip("/").count("/") - prefix_depth > max_depth:
            continue
        try:
            if stat.S_ISREG(os.lstat(match).st_mode):
                matches.append(os.fsencode(match))
        except OSError:
            continue
    return sorted(matches)
