"""Shared fixtures: servers started once per test session, the reference-binary policy, TIME.

Reference-backed tests skip when the pinned binary is missing, except under CI=true, where a
missing binary is a failure (CI must prove the differential suite ran).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.servers import (
    PREVIOUS_VERSIONS,
    REFERENCE_CODEX_HOME,
    REFERENCE_VERSION,
    REFERENCE_VERSIONS,
    ours_command,
    reference_binary,
    reference_command,
)

IN_CI = os.environ.get("CI", "").lower() == "true"
# Scale factor for timeouts in tests (like websockets' MS): raise it on slow machines.
TIME = float(os.environ.get("EXECSERVER_TEST_TIME", "1.0"))
# EXECSERVER_SOAK=1 turns the bounded fuzz and chaos tests into long soaks (README, Testing).
SOAK = os.environ.get("EXECSERVER_SOAK", "") not in ("", "0")


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"reference: codex {version} at {reference_binary(version) or 'NOT INSTALLED'}; CI={IN_CI}"
        for version in REFERENCE_VERSIONS
    ]


def require_reference(version: str = REFERENCE_VERSION) -> Path:
    """The `codex` binary of `version` (default: the newest); skips when it is missing,
    except under CI=true, where that fails."""
    binary = reference_binary(version)
    if binary is None or not binary.exists():
        if IN_CI:
            pytest.fail(f"CI=true but the pinned reference codex {version} is not installed")
        pytest.skip(f"reference codex {version} not installed (run .ci/run or set CODEX_BIN)")
    return binary


def bwrap_path() -> str | None:
    """The bubblewrap binary a sandboxing server would use, or None."""
    return shutil.which("bwrap") or (
        "/usr/bin/bwrap" if os.access("/usr/bin/bwrap", os.X_OK) else None
    )


def require_bwrap() -> str:
    """`bwrap`'s path; skips when it is missing, except under CI=true, where that fails."""
    path = bwrap_path()
    if path is None:
        if IN_CI:
            pytest.fail("CI=true but bubblewrap (`bwrap`) is not installed")
        pytest.skip("bubblewrap (`bwrap`) is not installed")
    return path


class ServerProcess:
    """A server subprocess started synchronously (usable from any event loop)."""

    def __init__(self, command: list[str], workdir: Path, name: str) -> None:
        env = dict(os.environ)
        REFERENCE_CODEX_HOME.mkdir(parents=True, exist_ok=True)
        env.setdefault("CODEX_HOME", str(REFERENCE_CODEX_HOME))
        self.name = name
        self.stderr_path = workdir / f"{name}-stderr.log"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        if not line.startswith("ws://"):
            self.stop()
            raise RuntimeError(f"server printed {line!r}: {self.stderr_path.read_text()}")
        self.url = line

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()


@pytest.fixture(scope="session")
def shared_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory both servers run in, so paths and cwd agree in differential tests."""
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def ours(shared_workdir: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(ours_command(), shared_workdir, "ours")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def reference(shared_workdir: Path) -> Iterator[ServerProcess]:
    require_reference()
    server = ServerProcess(reference_command(), shared_workdir, "reference")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def reference_previous(shared_workdir: Path) -> Iterator[ServerProcess]:
    """The reference of the release before the newest (scripts/codex-versions)."""
    version = PREVIOUS_VERSIONS[0]
    require_reference(version)
    server = ServerProcess(
        reference_command(version=version), shared_workdir, f"reference-{version}"
    )
    yield server
    server.stop()


@pytest.fixture(params=["ours", "reference"])
def any_server(request: pytest.FixtureRequest) -> ServerProcess:
    """Each test using this runs against our server and the reference."""
    server: ServerProcess = request.getfixturevalue(request.param)
    return server


def python_argv(code: str) -> list[str]:
    """argv for a child program written in Python."""
    return [sys.executable, "-c", code]
