"""What `environment/info` reports about this host: shell, directories, platform, capabilities."""

from __future__ import annotations

import hashlib
import os
import pwd
import sys
from collections.abc import Mapping

from execserver.protocol.pathuri import HOST_OS, PathUri
from execserver.protocol.session import EnvironmentCapabilities, EnvironmentInfo, ShellInfo

# The protocol level this server implements; orchestrators compare it with their own version.
EXECUTOR_VERSION = "0.171.0"
IMPLEMENTATION = "execserver-python"

_SHELL_NAMES = {"bash": "bash", "zsh": "zsh", "sh": "sh", "pwsh": "powershell"}


def detect_shell(env: Mapping[str, str]) -> ShellInfo:
    """The user's login shell from the passwd database (like the reference, not `$SHELL`)."""
    candidates: list[str] = []
    try:
        candidates.append(pwd.getpwuid(os.getuid()).pw_shell)
    except KeyError:
        pass
    candidates += [env.get("SHELL", ""), "/bin/bash", "/bin/zsh", "/bin/sh"]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            base = os.path.basename(path)
            return ShellInfo(name=_SHELL_NAMES.get(base, base), path=path)
    return ShellInfo(name="sh", path="/bin/sh")


def implemented_capabilities() -> EnvironmentCapabilities:
    """What this server implements; everything else is advertised as false."""
    return EnvironmentCapabilities(
        http_header_env_vars=True,
        file_write_streaming=True,
        sandboxed_file_streaming=True,  # fs/open honours the sandbox (fd opened inside it)
        fs_watch_missing=True,  # fs/watchMissing + fs/missingChanged (inotify)
        environment_config_read=True,  # environmentConfig/read
        capability_discovery_v2=True,  # capabilities/discoverV2 (+ capabilityRoots/discoverV1)
        capability_discovery_sandbox=True,  # ... run inside the fs sandbox helper when asked
        shell_snapshot_v2=True,  # process/start.shellSnapshot (local/shell_snapshot.py)
        # `root` writable with deny/read entries: /dev stays usable, restrictions hold, and a
        # read-only path through a writable symlink is refused (local/sandbox/).
        linux_root_write_preserves_devices=True,
        linux_approved_root_write_preserves_restrictions=True,
        # process/start.networkProxy: an executor-local managed proxy per process, its policy
        # (with reviewDomains put to the client) and the sandbox's own network namespace
        # (local/network/, local/sandbox/port_bridge.py).
        network_proxy_launch=True,
        network_proxy_review_domains=True,
        # proxy.credentialMasking (+ credentialProviders): secrets in the child's environment
        # become dummies, swapped back inside intercepted TLS to their bound hosts
        # (local/network/credentials.py, mitm.py, certs.py).
        credential_masking=True,
        credential_masking_custom_providers=True,
    )


def environment_info(
    capabilities: EnvironmentCapabilities | None = None, env: Mapping[str, str] | None = None
) -> EnvironmentInfo:
    env = os.environ if env is None else env
    home = env.get("HOME") or os.path.expanduser("~")
    tmpdir = env.get("TMPDIR")
    temp_dirs = [PathUri.from_native(tmpdir)] if tmpdir and os.path.isabs(tmpdir) else []
    provider = hashlib.sha256(f"{IMPLEMENTATION} {EXECUTOR_VERSION}".encode()).hexdigest()
    return EnvironmentInfo(
        shell=detect_shell(env),
        executor_version=EXECUTOR_VERSION,
        provider_id=f"sha256:{provider}",
        cwd=PathUri.from_native(os.getcwd()),
        user_home_dir=PathUri.from_native(home),
        platform_os=HOST_OS,
        prepend_path_dirs=[],
        temporary_directories=temp_dirs,
        temp_dir=temp_dirs[0] if temp_dirs else PathUri.from_native("/tmp"),
        capabilities=capabilities or implemented_capabilities(),
    )


def platform_supported() -> bool:
    return sys.platform.startswith("linux")
