"""End-to-end fixtures: the real `codex app-server` running agent turns on an exec-server.

Each test gets its own of everything: a scripted model (`MockModel`), an exec-server (ours or
the pinned reference, the `executor_kind` parameter), a cutting TCP proxy in front of it, a
fresh `CODEX_HOME`, and a `codex app-server` with that exec-server registered as the
environment `remote`.

How a test knows the work happened on the exec-server and not in the app-server:

* **A directory only the executor sees.** The exec-server runs under bubblewrap in its own
  mount namespace, where a private tmpfs on `/srv` holds the test's work directory at
  `EXECUTOR_CWD`. The app-server (and this test process) cannot reach that path: outside the
  namespace `/srv` has no such directory. The thread's cwd is that path, so a command that
  runs there, a patch that lands in the work directory and an AGENTS.md that is found there
  can only have gone through the exec-server.
* **An environment variable only the executor has.** `E2E_MARK` (a random token) is set for
  the exec-server and removed from the app-server's environment; a command that prints it
  ran as a child of the exec-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import TIME, require_bwrap, require_reference
from tests.harness.app_server import AppServer, Turn
from tests.harness.faults import CuttingProxy
from tests.harness.mock_model import MockModel, ModelRequest, Reply
from tests.harness.servers import (
    CACHE_DIR,
    PREVIOUS_VERSIONS,
    REFERENCE_VERSION,
    RunningServer,
    running_server,
)

EXECUTOR_CWD = "/srv/execserver-e2e"
ENVIRONMENT_ID = "remote"
MODEL = "gpt-5.5"  # a slug from the bundled catalog: the normal tool set, apply_patch included


def app_config(model: MockModel, slug: str = MODEL, settings: str = "") -> str:
    """The app-server's config.toml: model `slug` served by `model`, no approvals, no sandbox,
    and `settings` (top-level `key = value` lines; tables go after the result)."""
    return (
        f'model = "{slug}"\n'
        'approval_policy = "never"\n'
        'sandbox_mode = "danger-full-access"\n' + settings + model.provider_config()
    )


def private_cwd(bwrap: str, host_dir: Path) -> list[str]:
    """A bwrap prefix: the whole system as it is, plus `host_dir` at EXECUTOR_CWD, privately."""
    return [
        bwrap,
        "--dev-bind", "/", "/",
        "--tmpfs", str(Path(EXECUTOR_CWD).parent),
        "--bind", str(host_dir), EXECUTOR_CWD,
        "--chdir", EXECUTOR_CWD,
        "--die-with-parent",
        "--",
    ]  # fmt: skip


@dataclass
class Agent:
    """One app-server whose environment `remote` is the exec-server under test."""

    kind: str
    app: AppServer
    model: MockModel
    proxy: CuttingProxy | None
    """The cutting proxy in front of a directly reached executor (None through a relay)."""
    executor: RunningServer | None
    work: Path
    """The executor's cwd as this test process sees it (EXECUTOR_CWD inside the executor)."""
    mark: str
    """The value of E2E_MARK, which only the exec-server's processes see."""
    home: Path = Path()
    """The app-server's CODEX_HOME."""
    sandbox: str = "danger-full-access"
    """The thread's sandbox mode (`e2e_setup(sandbox=...)`)."""
    thread_id: str | None = None
    turns: list[Turn] = field(default_factory=list)

    async def turn(self, *replies: Reply, text: str = "go") -> tuple[Turn, list[ModelRequest]]:
        """Run one turn in which the model replies `replies` in order and then finishes.

        Returns the turn and the model requests it made (the first carries the user text,
        each later one the tool outputs of the reply before it)."""
        if self.thread_id is None:
            self.thread_id = await self.app.start_thread(ENVIRONMENT_ID, EXECUTOR_CWD, self.sandbox)
        first = len(self.model.requests)
        self.model.script.extend(replies)
        turn = await self.app.run_turn(self.thread_id, text)
        self.turns.append(turn)
        if self.model.errors:
            raise self.model.errors[0]
        assert turn.status == "completed", (turn.error, self.app.stderr())
        assert not self.app.server_requests, self.app.server_requests
        return turn, self.model.requests[first:]

    async def add_environment(self) -> None:
        """Register the executor (through the proxy) as ENVIRONMENT_ID with the app-server."""
        assert self.proxy is not None
        await self.app.call(
            "environment/add",
            {"environmentId": ENVIRONMENT_ID, "execServerUrl": f"ws://127.0.0.1:{self.proxy.port}"},
        )

    async def wait_until(
        self, condition: Callable[[], object], what: str, detail: Callable[[], object] = str
    ) -> None:
        """Poll a condition on another process (the executor, its children) with a deadline;
        on timeout the assertion names `what` and shows `detail()`."""
        try:
            async with asyncio.timeout(30 * TIME):
                while not condition():  # noqa: ASYNC110 - state of another process
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(f"timed out waiting until {what} {detail()}") from None

    async def metrics(self) -> str:
        """The executor's /metrics page (our server started with `--metrics`)."""
        assert self.executor is not None
        async with httpx.AsyncClient() as client:
            response = await client.get(self.executor.http_base + "/metrics")
        response.raise_for_status()
        return response.text


# Each scenario runs the newest app-server on our executor and on the reference executor, and
# the previous releases' app-servers on ours (older Codex clients must keep working with us).
EXECUTOR_KINDS = ["ours", "reference", *(f"ours-app{version}" for version in PREVIOUS_VERSIONS)]


@pytest.fixture(params=EXECUTOR_KINDS)
def executor_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


def app_version(executor_kind: str) -> str:
    """The app-server release of a scenario (`ours-appVERSION`: that one, else the newest)."""
    _, _, version = executor_kind.partition("-app")
    return version or REFERENCE_VERSION


def e2e_setup(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """What a test's `e2e_setup` marker asks for: the app-server config's `[features]` table
    (and any more `config` text), and executor environment variables (`executor_env`, and
    `HOME`, a directory holding the given `executor_home` files)."""
    marker = request.node.get_closest_marker("e2e_setup")
    if marker is None:
        return "", {}
    features = marker.kwargs.get("features", [])
    config = "\n[features]\n" + "".join(f"{name} = true\n" for name in features) if features else ""
    config += marker.kwargs.get("config", "")
    env: dict[str, str] = dict(marker.kwargs.get("executor_env", {}))
    files: dict[str, str] = marker.kwargs.get("executor_home", {})
    if files:
        home = tmp_path / "executor-home"
        home.mkdir()
        for name, text in files.items():
            (home / name).write_text(text)
        env["HOME"] = str(home)
    return config, env


@dataclass
class Setup:
    """What every scenario starts from (`scenario_setup`)."""

    version: str
    """The app-server release."""
    server_kind: str
    """`ours` or `reference`: the executor."""
    bwrap: str
    work: Path
    mark: str
    home: Path
    """A fresh directory for the app-server's CODEX_HOME."""
    model: MockModel


@contextlib.asynccontextmanager
async def scenario_setup(
    executor_kind: str, tmp_path: Path, home_prefix: str = "e2e-home-"
) -> AsyncIterator[Setup]:
    """Skip unless the app-server release and bubblewrap are there; then a work directory, a
    mark, a home directory and a running mock model, all removed afterwards."""
    version = app_version(executor_kind)
    require_reference(version)  # the app-server is the reference binary whichever executor runs
    server_kind = executor_kind.partition("-app")[0]
    bwrap = require_bwrap()
    work = tmp_path / "work"
    work.mkdir()
    mark = secrets.token_hex(8)
    # CODEX_HOME outside /tmp: Codex refuses to set up its helper aliases under a temp dir.
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix=home_prefix, dir=CACHE_DIR))
    model = MockModel()
    await model.start()
    try:
        yield Setup(version, server_kind, bwrap, work, mark, home, model)
    finally:
        await model.close()
        with contextlib.suppress(OSError):
            shutil.rmtree(home)


@contextlib.asynccontextmanager
async def direct_agent(
    executor_kind: str,
    tmp_path: Path,
    *,
    config: Callable[[MockModel], str] = app_config,
    executor_env: Mapping[str, str] | None = None,
    extra: Sequence[str] = (),
) -> AsyncIterator[Agent]:
    """An agent whose executor (started with `extra` arguments and `executor_env` added to its
    environment) is reached directly through a cutting proxy; `config(model)` is the
    app-server's config.toml."""
    async with scenario_setup(executor_kind, tmp_path) as setup:
        (setup.home / "config.toml").write_text(config(setup.model))
        env = {**os.environ, "E2E_MARK": setup.mark, **(executor_env or {})}
        wrap = private_cwd(setup.bwrap, setup.work)
        async with (
            running_server(setup.server_kind, tmp_path, env=env, extra=extra, wrap=wrap) as ex,
            CuttingProxy(ex.port) as proxy,
            AppServer.start(setup.home, tmp_path, version=setup.version) as app,
        ):
            model, work, mark = setup.model, setup.work, setup.mark
            agent = Agent(executor_kind, app, model, proxy, ex, work, mark, setup.home)
            await agent.add_environment()
            yield agent


@pytest.fixture
async def agent(
    executor_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Agent]:
    extra_config, executor_env = e2e_setup(request, tmp_path)
    async with direct_agent(
        executor_kind,
        tmp_path,
        config=lambda model: app_config(model) + extra_config,
        executor_env=executor_env,
    ) as agent:
        marker = request.node.get_closest_marker("e2e_setup")
        agent.sandbox = marker.kwargs.get("sandbox", agent.sandbox) if marker else agent.sandbox
        yield agent
