"""The portable sandbox intent sent with `process/start` and every `fs/*` call (PROTOCOL.md §9).

Only the context envelope is typed here; the permission profile is kept as a JSON object until
sandbox enforcement exists, and `requests_enforcement()` tells the caller whether the request
asks for restrictions the server would have to enforce. Pure data.
"""

from __future__ import annotations

from typing import Any

from execserver.protocol.base import WireStruct
from execserver.protocol.pathuri import PathUri


class SandboxContext(WireStruct):
    rust_name = "WireFileSystemSandboxContext"
    rust_len = 10

    permissions: dict[str, Any]
    windows_sandbox_level: str | dict[str, Any]
    cwd: PathUri | None = None
    workspace_roots: list[PathUri] | None = None
    use_legacy_landlock: bool | None = None
    policy_context: dict[str, Any] | None = None
    sandbox_override: str | None = None
    windows_sandbox_proxy_settings_mode: str | None = None

    def requests_enforcement(self) -> bool:
        """True unless the profile is `disabled` (nothing to enforce)."""
        return self.permissions.get("type") != "disabled"
