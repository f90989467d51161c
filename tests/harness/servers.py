"""Start exec-servers for tests: ours (`python -m execserver serve`) and the pinned reference.

Both are started the same way, as subprocesses listening on ws://127.0.0.1:0; the URL is read
from the first line of stdout. The reference binary is found through `$CODEX_BIN` or the cache
folder `.ci/run` installs into; `reference_binary()` says why when it is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _codex_versions() -> tuple[str, ...]:
    lines = (REPO_ROOT / "scripts" / "codex-versions").read_text().splitlines()
    return tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))


REFERENCE_VERSIONS = _codex_versions()
"""The Codex releases under test, newest first (scripts/codex-versions)."""
REFERENCE_VERSION = REFERENCE_VERSIONS[0]
"""The newest: the whole differential suite runs against it."""
PREVIOUS_VERSIONS = REFERENCE_VERSIONS[1:]
"""Older releases: the core, filesystem and end-to-end suites run against them too."""
# The reference binary and its CODEX_HOME live in the user's cache, never in the checkout: the
# checkout may be under /tmp, where the reference refuses to create its sandbox helper alias, and
# its sandbox mounts the directory holding the binary (which would make /tmp appear in sandboxes).
# scripts/test.sh installs the binary into the same directory.
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "execserver"
REFERENCE_CODEX_HOME = CACHE_DIR / "codex-home"


def cached_binary(version: str) -> Path:
    return (
        CACHE_DIR
        / f"codex-{version}"
        / "node_modules/@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex"
    )


def reference_binary(version: str = REFERENCE_VERSION) -> Path | None:
    """Path of the pinned `codex` binary of `version` (default: the newest), or None if it is
    not installed. `$CODEX_BIN` names the newest one."""
    configured = os.environ.get("CODEX_BIN")
    if configured and version == REFERENCE_VERSION:
        return Path(configured)
    binary = cached_binary(version)
    return binary if binary.exists() else None


def ours_command(listen: str = "ws://127.0.0.1:0", extra: Sequence[str] = ()) -> list[str]:
    return [sys.executable, "-m", "execserver", "serve", "--listen", listen, *extra]


def reference_command(
    listen: str = "ws://127.0.0.1:0",
    extra: Sequence[str] = (),
    version: str = REFERENCE_VERSION,
) -> list[str]:
    binary = reference_binary(version)
    if binary is None:
        raise RuntimeError(
            f"the reference codex {version} binary is not installed (run .ci/run or set CODEX_BIN)"
        )
    return [str(binary), "exec-server", "--listen", listen, *extra]


@dataclass
class RunningServer:
    kind: str
    url: str
    process: asyncio.subprocess.Process
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def http_base(self) -> str:
        return "http://" + self.url[len("ws://") :]

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        assert self.process.returncode is not None
        return self.process.returncode


def generation(server: RunningServer) -> int:
    """How many upgrades in place this server went through (its exec'd environment says)."""
    environ = Path(f"/proc/{server.pid}/environ").read_bytes().split(b"\0")
    for item in environ:
        if item.startswith(b"EXECSERVER_UPGRADE_GENERATION="):
            return int(item.split(b"=", 1)[1])
    return 0


async def start_server(
    kind: str,
    tmp_dir: Path,
    *,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    wrap: Sequence[str] = (),
) -> RunningServer:
    """Start `kind` ("ours" or "reference") on an ephemeral port and wait for its URL.

    `wrap` is a command prefix the server runs under (such as a `bwrap` invocation)."""
    command = ours_command(extra=extra) if kind == "ours" else reference_command(extra=extra)
    command = [*wrap, *command]
    stderr_path = tmp_dir / f"{kind}-server-{os.getpid()}-{id(command)}.stderr"
    child_env = dict(os.environ if env is None else env)
    REFERENCE_CODEX_HOME.mkdir(parents=True, exist_ok=True)
    child_env.setdefault("CODEX_HOME", str(REFERENCE_CODEX_HOME))
    with open(stderr_path, "wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=child_env,
            cwd=str(cwd or tmp_dir),
            start_new_session=True,
        )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"{kind} server printed no URL: {stderr_path.read_text()}") from None
    url = line.decode().strip()
    if not url.startswith(("ws://", "wss://")):
        process.kill()
        await process.wait()
        raise RuntimeError(f"{kind} server printed {line!r}; stderr: {stderr_path.read_text()}")
    return RunningServer(kind, url, process, stderr_path)


@contextlib.asynccontextmanager
async def running_server(
    kind: str,
    tmp_dir: Path,
    *,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
    wrap: Sequence[str] = (),
) -> AsyncIterator[RunningServer]:
    server = await start_server(kind, tmp_dir, extra=extra, env=env, wrap=wrap)
    try:
        yield server
    finally:
        await server.stop()
        if server.process.stdout is not None:
            with contextlib.suppress(Exception):
                await server.process.stdout.read()
