"""The portable sandbox intent sent with `process/start` and every `fs/*` call (PROTOCOL.md §9).

The context envelope is camelCase; the permission profile inside it is snake_case and tagged by
`type` (serde's internally tagged enums). Unknown members are ignored, as the reference does.
Pure data: what the intent *means* for this host is decided in `local/`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from execserver.compat.serde import variants
from execserver.protocol.base import NonZeroUsize, UnitEnum, WireStruct
from execserver.protocol.pathuri import PathUri

Access = Literal["read", "write", "deny", "none"]
variants(Access)
NetworkPolicy = Literal["restricted", "enabled"]
variants(NetworkPolicy)


class _Snake(msgspec.Struct, kw_only=True):
    """Profile members are snake_case on the wire (no renaming)."""

    rust_name: ClassVar[str] = ""
    rust_len: ClassVar[int] = 0
    rust_enum: ClassVar[str] = ""


# -- special paths (tag `kind`) -----------------------------------------------------------------


class _Special(_Snake, tag_field="kind"):
    rust_enum = "FileSystemSpecialPath"


class SpecialRoot(_Special, tag="root"):
    pass


class SpecialMinimal(_Special, tag="minimal"):
    pass


class SpecialCwd(_Special, tag="current_working_directory"):
    pass


class SpecialProjectRoots(_Special, tag="project_roots"):
    subpath: str | None = None


class SpecialTmpdir(_Special, tag="tmpdir"):
    pass


class SpecialSlashTmp(_Special, tag="slash_tmp"):
    pass


class SpecialUnknown(_Special, tag="unknown"):
    path: str


SpecialPath = (
    SpecialRoot
    | SpecialMinimal
    | SpecialCwd
    | SpecialProjectRoots
    | SpecialTmpdir
    | SpecialSlashTmp
    | SpecialUnknown
)


# -- filesystem paths (tag `type`) --------------------------------------------------------------


class _FsPath(_Snake, tag_field="type"):
    rust_enum = "FileSystemPath"


class PathEntryPath(_FsPath, tag="path"):
    path: PathUri


class GlobPatternPath(_FsPath, tag="glob_pattern"):
    pattern: str


class SpecialEntryPath(_FsPath, tag="special"):
    value: SpecialPath


FileSystemPath = PathEntryPath | GlobPatternPath | SpecialEntryPath


class FileSystemEntry(_Snake):
    rust_name = "FileSystemSandboxEntry"

    path: FileSystemPath
    access: Access


# -- filesystem policy and profile ----------------------------------------------------------------


class _FsPolicy(_Snake, tag_field="type"):
    rust_enum = "FileSystemPermissions"


class UnrestrictedFileSystem(_FsPolicy, tag="unrestricted"):
    pass


class RestrictedFileSystem(_FsPolicy, tag="restricted"):
    entries: list[FileSystemEntry]
    glob_scan_max_depth: NonZeroUsize | None = None


FileSystemPolicy = RestrictedFileSystem | UnrestrictedFileSystem


class _Profile(_Snake, tag_field="type"):
    rust_enum = "PermissionProfile"


class ManagedProfile(_Profile, tag="managed"):
    file_system: FileSystemPolicy
    network: NetworkPolicy


class DisabledProfile(_Profile, tag="disabled"):
    pass


class ExternalProfile(_Profile, tag="external"):
    network: NetworkPolicy


PermissionProfile = ManagedProfile | DisabledProfile | ExternalProfile


class WindowsSandboxLevel(UnitEnum):
    variants = ("disabled", "restricted-token", "elevated", "mxc")


class SandboxOverride(UnitEnum):
    variants = ("noOverride", "escalatedSandboxWithRestrictions", "bypassSandboxFirstAttempt")


class ProxySettingsMode(UnitEnum):
    variants = ("reconcile", "preserve")


class PolicyContext(WireStruct):
    """Orchestrator-side policy details; carried, not used here."""

    rust_name = "WireFileSystemPolicyContext"


class SandboxContext(WireStruct):
    rust_name = "WireFileSystemSandboxContext"
    rust_len = 10

    permissions: PermissionProfile
    windows_sandbox_level: WindowsSandboxLevel
    cwd: PathUri | None = None
    workspace_roots: list[PathUri] = msgspec.field(default_factory=list)
    use_legacy_landlock: bool = False
    policy_context: PolicyContext | None = None
    sandbox_override: SandboxOverride = SandboxOverride("noOverride")
    windows_sandbox_proxy_settings_mode: ProxySettingsMode = ProxySettingsMode("reconcile")

    def restricts_filesystem(self) -> bool:
        """True when file access must be limited (a managed, restricted filesystem policy)."""
        permissions = self.permissions
        return isinstance(permissions, ManagedProfile) and isinstance(
            permissions.file_system, RestrictedFileSystem
        )

    def restricts_network(self) -> bool:
        permissions = self.permissions
        return not isinstance(permissions, DisabledProfile) and permissions.network == "restricted"

    def requests_enforcement(self) -> bool:
        """True unless the profile is `disabled` (a process would have to run sandboxed)."""
        return not isinstance(self.permissions, DisabledProfile)


class DiscoverySandboxContext(SandboxContext):
    """The sandbox of a capability discovery: like an fs request's, but `cwd` is required."""

    rust_name = "FileSystemSandboxContext"
    rust_len = 9

    cwd: PathUri
