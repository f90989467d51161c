"""Wire structs of the handshake and of `environment/*`. Pure data."""

from __future__ import annotations

from execserver.protocol.base import WireStruct
from execserver.protocol.pathuri import PathUri


class InitializeParams(WireStruct):
    rust_name = "InitializeParams"
    rust_len = 2

    client_name: str
    resume_session_id: str | None = None
    extensions: list[str] | None = None
    """Extension: execserver features this client wants (e.g. `processEndings`); the reference
    ignores the field."""


class ShellInfo(WireStruct):
    name: str
    path: str


class EnvironmentCapabilities(WireStruct):
    """Feature flags the orchestrator reads; `False` for everything this server lacks."""

    network_proxy_launch: bool = False
    network_proxy_review_domains: bool = False
    network_proxy_transparent_tcp: bool = False
    credential_masking: bool = False
    credential_masking_custom_providers: bool = False
    capability_discovery_sandbox: bool = False
    fs_watch_missing: bool = False
    capability_discovery_v2: bool = False
    environment_config_read: bool = False
    http_header_env_vars: bool = False
    sandboxed_file_streaming: bool = False
    file_write_streaming: bool = False
    shell_snapshot_v2: bool = False
    windows_mxc: bool = False
    linux_root_write_preserves_devices: bool = False
    linux_approved_root_write_preserves_restrictions: bool = False


class EnvironmentInfo(WireStruct):
    shell: ShellInfo
    executor_version: str
    provider_id: str
    cwd: PathUri
    user_home_dir: PathUri
    platform_os: str
    prepend_path_dirs: list[PathUri]
    temporary_directories: list[PathUri]
    temp_dir: PathUri
    capabilities: EnvironmentCapabilities


class InitializeResponse(WireStruct):
    session_id: str
    environment_info: EnvironmentInfo


class EnvironmentStatusResponse(WireStruct):
    status: str = "ready"


class ProcessEndingsInfo(WireStruct):
    """What the `processEndings` extension can do on this executor."""

    termination: bool
    timeouts: bool
    wait: bool
    waiting_for_input: bool
    whole_tree_kill: str
    """`cgroup` (every descendant) or `processTree` (the group and parent links only)."""
    cgroup: str | None
    """`v1`, `v2` or None."""
    limits: list[str]
    """The limits this executor enforces: `memoryBytes`, `pids`, `cpus`."""


class ExecutorExtensions(WireStruct):
    process_endings: ProcessEndingsInfo


class EnvironmentInfoWithExtensions(EnvironmentInfo, kw_only=True):
    """`environment/info` for a session that asked for extensions (None from servers without
    them; the server only sends this struct with `extensions` set)."""

    extensions: ExecutorExtensions | None = None


class InitializeResponseWithExtensions(InitializeResponse, kw_only=True):
    environment_info: EnvironmentInfoWithExtensions


class SessionCloseResponse(WireStruct):
    """`{}`: the result of the `session/close` extension."""
