"""`Environment.info()` on every environment."""

from __future__ import annotations

import os

from execserver.environment import Environment
from tests.harness.servers import REFERENCE_VERSION


async def test_environment_info_describes_the_executor(environment: Environment) -> None:
    """info() names the platform, a shell that exists, and absolute directories."""
    info = await environment.info()
    assert info.platform_os == "linux"
    assert os.path.isabs(info.shell.path) and os.access(info.shell.path, os.X_OK)
    assert info.cwd.native_path().startswith(b"/")
    assert info.temp_dir.native_path().startswith(b"/")
    assert info.executor_version == REFERENCE_VERSION
