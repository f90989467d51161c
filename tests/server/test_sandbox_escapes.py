"""Sandbox escape attempts that must be DENIED, with the file outside the workspace unchanged.

Every test uses the same intent: read everything, write only `ws/` (a managed, restricted
filesystem policy), network restricted. Each escape is tried through `process/start` (a shell
inside the sandbox) and, where the protocol can express it, through the `fs/*` methods with the
same sandbox. Each test also makes a legitimate write inside `ws/` first: a server that refuses
or ignores sandboxed requests fails these tests instead of passing them vacuously.

The tests run against our server and, marked `reference`, against the pinned codex, which denies
all of them. The reference is started with CODEX_HOME outside the temp dir (it refuses to create
its sandbox helper alias under /tmp and then cannot run bubblewrap-backed processes at all).

Not expressible through `fs/*`: network access (no fs method opens sockets) and creating a hard
link (no fs method links); the fs variant of the hard-link test writes to the path the sandboxed
process tried to link, which must become a new file inside the workspace.

Requires bubblewrap: skipped when `bwrap` is missing, a failure under CI=true.
`test_missing_bwrap_refuses_sandboxed_requests` needs no bwrap and always runs.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_bwrap, require_reference
from tests.harness.servers import REFERENCE_CODEX_HOME, RunningServer, running_server
from tests.harness.wire import Json, WireClient
from tests.wire.cases_sandbox import TcpListener

ORIGINAL = "original\n"
_TIMEOUT = 30.0
# The reference creates helper aliases under $CODEX_HOME; it must not be inside the temp dir.
_REFERENCE_CODEX_HOME = REFERENCE_CODEX_HOME


@pytest.fixture(scope="module")
def bwrap() -> str:
    return require_bwrap()


@dataclass
class Sandbox:
    """A connected client plus the test's tree: `ws/` (writable) and `outside/target.txt`."""

    client: WireClient
    base: Path

    @property
    def ws(self) -> Path:
        return self.base / "ws"

    @property
    def target(self) -> Path:
        return self.base / "outside" / "target.txt"

    def uri(self, path: Path | str) -> str:
        return f"file://{path}"

    def policy(self) -> Json:
        return {
            "permissions": {
                "type": "managed",
                "file_system": {
                    "type": "restricted",
                    "entries": [
                        {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
                        {"path": {"type": "path", "path": self.uri(self.ws)}, "access": "write"},
                    ],
                },
                "network": "restricted",
            },
            "windowsSandboxLevel": "disabled",
        }

    def start_params(self, process_id: str, script: str, **extra: Any) -> Json:
        return {
            "processId": process_id,
            "argv": ["sh", "-c", script],
            "cwd": self.uri(self.ws),
            "env": {"PATH": "/usr/bin:/bin"},
            "tty": False,
            "sandbox": self.policy(),
            **extra,
        }

    async def run(self, process_id: str, script: str) -> str:
        """Run `script` sandboxed (after a control write to ws/control.txt); return its stdout
        and stderr. Fails the test unless the process started and the control write worked."""
        script = f"echo inside > control.txt\n{script}"
        response = await self.client.request("process/start", self.start_params(process_id, script))
        assert "result" in response, f"sandboxed process/start was refused: {response}"
        assert response["result"]["sandboxType"] == "linuxSeccomp", response
        events = await self.client.process_events(process_id, timeout=_TIMEOUT)
        assert (self.ws / "control.txt").read_text() == "inside\n", "control write failed"
        return output_of(events)

    async def fs(self, method: str, params: Json) -> Json:
        response = await self.client.request(
            method, {**params, "sandbox": self.policy()}, timeout=_TIMEOUT
        )
        return response

    async def fs_control(self) -> None:
        """A legitimate sandboxed fs write inside the workspace must succeed."""
        params = {"path": self.uri(self.ws / "fs-control.txt"), "dataBase64": b64("inside\n")}
        response = await self.fs("fs/writeFile", params)
        assert response.get("result") == {}, f"sandboxed fs/writeFile inside ws failed: {response}"
        assert (self.ws / "fs-control.txt").read_text() == "inside\n"

    def assert_outside_unchanged(self) -> None:
        assert self.target.read_text() == ORIGINAL
        assert sorted(os.listdir(self.target.parent)) == ["target.txt"]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def output_of(events: list[Json]) -> str:
    """Stdout, then stderr: the `label=N` lines go to stdout and must not be interleaved with
    error messages that the shell writes to stderr at the same time."""
    outputs = [e["params"] for e in events if e["method"] == "process/output"]
    outputs.sort(key=lambda p: (p["stream"] != "stdout", p["seq"]))
    chunks = [base64.b64decode(p["chunk"]).decode(errors="replace") for p in outputs]
    return "".join(chunks)


def statuses(output: str) -> dict[str, int]:
    """`label=status` lines printed by the scripts below."""
    found = {}
    for line in output.splitlines():
        label, sep, value = line.partition("=")
        if sep and value.isdigit():
            found[label] = int(value)
    return found


def status_of(output: str, label: str) -> int:
    """The status a script printed as `label=N`; fails (showing the output) if it printed none."""
    found = statuses(output)
    assert label in found, f"no {label}= line in the process output: {output!r}"
    return found[label]


def assert_denied(response: Json) -> None:
    assert "error" in response, f"escape through fs succeeded: {response}"


KINDS = ["ours", pytest.param("reference", marks=pytest.mark.reference)]


@pytest.fixture(params=KINDS)
async def server(
    request: pytest.FixtureRequest, bwrap: str, tmp_path: Path
) -> AsyncIterator[RunningServer]:
    kind: str = request.param
    env = dict(os.environ)
    if kind == "reference":
        require_reference()
        _REFERENCE_CODEX_HOME.mkdir(parents=True, exist_ok=True)
        env["CODEX_HOME"] = str(_REFERENCE_CODEX_HOME)
    logs = tmp_path / "server"
    logs.mkdir()
    async with running_server(kind, logs, env=env) as running:
        yield running


@pytest.fixture
async def sandbox(server: RunningServer, tmp_path: Path) -> AsyncIterator[Sandbox]:
    base = tmp_path / "tree"
    (base / "ws").mkdir(parents=True)
    (base / "outside").mkdir()
    (base / "outside" / "target.txt").write_text(ORIGINAL)
    async with await WireClient.connect(server.url) as client:
        await client.initialize()
        yield Sandbox(client, base)


# -- `..` and absolute paths --------------------------------------------------------------------


async def test_dotdot_through_process(sandbox: Sandbox) -> None:
    output = await sandbox.run("dotdot", "echo escaped > ../outside/target.txt; echo dotdot=$?")
    assert status_of(output, "dotdot") != 0, output
    sandbox.assert_outside_unchanged()


async def test_dotdot_through_fs(sandbox: Sandbox) -> None:
    await sandbox.fs_control()
    for uri in [
        f"{sandbox.uri(sandbox.ws)}/../outside/target.txt",
        f"{sandbox.uri(sandbox.ws)}/%2E%2E/outside/target.txt",
        f"{sandbox.uri(sandbox.ws)}/sub/../../outside/target.txt",
    ]:
        assert_denied(await sandbox.fs("fs/writeFile", {"path": uri, "dataBase64": b64("x")}))
    sandbox.assert_outside_unchanged()


async def test_absolute_path_through_process(sandbox: Sandbox) -> None:
    output = await sandbox.run(
        "abs", f"echo escaped > {sandbox.target}; echo abs=$?; touch {sandbox.target}.new"
    )
    assert status_of(output, "abs") != 0, output
    sandbox.assert_outside_unchanged()


async def test_absolute_path_through_fs(sandbox: Sandbox) -> None:
    await sandbox.fs_control()
    target = sandbox.uri(sandbox.target)
    new = sandbox.uri(sandbox.target.parent / "new")
    attempts: list[tuple[str, Json]] = [
        ("fs/writeFile", {"path": target, "dataBase64": b64("x")}),
        ("fs/writeFile", {"path": new, "dataBase64": b64("x")}),
        ("fs/createDirectory", {"path": new}),
        ("fs/open", {"handleId": "h", "path": target, "mode": "replace"}),
        (
            "fs/copy",
            {
                "sourcePath": sandbox.uri(sandbox.ws / "fs-control.txt"),
                "destinationPath": target,
                "recursive": False,
            },
        ),
        ("fs/remove", {"path": target}),
    ]
    for method, params in attempts:
        assert_denied(await sandbox.fs(method, params))
    await sandbox.client.request("fs/close", {"handleId": "h"})
    sandbox.assert_outside_unchanged()


# -- symlinks -----------------------------------------------------------------------------------


async def test_symlink_in_workspace_through_process(sandbox: Sandbox) -> None:
    os.symlink(sandbox.target, sandbox.ws / "link")
    os.symlink(sandbox.target.parent, sandbox.ws / "dirlink")
    output = await sandbox.run(
        "links",
        "echo escaped > link; echo file=$?\n"
        "echo escaped > dirlink/target.txt; echo dir=$?\n"
        "touch dirlink/new; echo new=$?\n"
        f"ln -s {sandbox.target} made && echo escaped > made; echo made=$?",
    )
    assert all(status != 0 for status in statuses(output).values()), output
    assert len(statuses(output)) == 4, output
    sandbox.assert_outside_unchanged()


async def test_symlink_in_workspace_through_fs(sandbox: Sandbox) -> None:
    os.symlink(sandbox.target, sandbox.ws / "link")
    os.symlink(sandbox.target.parent, sandbox.ws / "dirlink")
    await sandbox.fs_control()
    link = sandbox.uri(sandbox.ws / "link")
    attempts: list[tuple[str, Json]] = [
        ("fs/writeFile", {"path": link, "dataBase64": b64("x")}),
        (
            "fs/writeFile",
            {"path": f"{sandbox.uri(sandbox.ws)}/dirlink/target.txt", "dataBase64": "eA=="},
        ),
        ("fs/writeFile", {"path": f"{sandbox.uri(sandbox.ws)}/dirlink/new", "dataBase64": "eA=="}),
        ("fs/open", {"handleId": "h", "path": link, "mode": "replace"}),
        (
            "fs/copy",
            {
                "sourcePath": sandbox.uri(sandbox.ws / "fs-control.txt"),
                "destinationPath": link,
                "recursive": False,
            },
        ),
        ("fs/createDirectory", {"path": f"{sandbox.uri(sandbox.ws)}/dirlink/made"}),
        ("fs/remove", {"path": f"{sandbox.uri(sandbox.ws)}/dirlink/target.txt"}),
    ]
    for method, params in attempts:
        assert_denied(await sandbox.fs(method, params))
    await sandbox.client.request("fs/close", {"handleId": "h"})
    sandbox.assert_outside_unchanged()


async def test_symlink_swapped_after_start_through_process(sandbox: Sandbox) -> None:
    """The policy is computed and the process started while `ws/swap` is a real directory;
    then it becomes a link to the outside directory, then the process writes through it."""
    swap = sandbox.ws / "swap"
    swap.mkdir()
    script = "echo ready; read go; echo escaped > swap/target.txt; echo swap=$?"
    params = sandbox.start_params("swap", script, pipeStdin=True)
    response = await sandbox.client.request("process/start", params)
    assert "result" in response, f"sandboxed process/start was refused: {response}"
    await sandbox.client.wait_for(
        lambda m: m.get("method") == "process/output" and m["params"]["processId"] == "swap",
        timeout=_TIMEOUT,
    )
    swap.rmdir()
    os.symlink(sandbox.target.parent, swap)
    write = await sandbox.client.request(
        "process/write", {"processId": "swap", "chunk": b64("go\n"), "writeId": "go"}
    )
    assert write["result"] == {"status": "accepted"}, write
    events = await sandbox.client.process_events("swap", timeout=_TIMEOUT)
    output = output_of(events)
    assert output.startswith("ready\n"), output
    assert status_of(output, "swap") != 0, output
    sandbox.assert_outside_unchanged()


async def test_symlink_swapped_between_requests_through_fs(sandbox: Sandbox) -> None:
    swap = sandbox.ws / "swap"
    swap.mkdir()
    params = {"path": sandbox.uri(swap / "target.txt"), "dataBase64": b64("escaped\n")}
    first = await sandbox.fs("fs/writeFile", params)
    assert first.get("result") == {}, f"write inside the workspace failed: {first}"
    assert (swap / "target.txt").read_text() == "escaped\n"
    (swap / "target.txt").unlink()
    swap.rmdir()
    os.symlink(sandbox.target.parent, swap)
    assert_denied(await sandbox.fs("fs/writeFile", params))
    sandbox.assert_outside_unchanged()


# -- hard links, /proc/self/root ------------------------------------------------------------------


async def test_hard_link_through_process(sandbox: Sandbox) -> None:
    output = await sandbox.run(
        "hard", f"ln {sandbox.target} hard; echo link=$?; echo escaped >> hard; echo write=$?"
    )
    sandbox.assert_outside_unchanged()
    hard = sandbox.ws / "hard"
    if hard.exists():
        assert not os.path.samefile(hard, sandbox.target), output
    assert status_of(output, "link") != 0, output


async def test_hard_link_through_fs(sandbox: Sandbox) -> None:
    output = await sandbox.run("hard", f"ln {sandbox.target} hard; echo link=$?")
    assert status_of(output, "link") != 0, output
    hard = sandbox.ws / "hard"
    response = await sandbox.fs(
        "fs/writeFile", {"path": sandbox.uri(hard), "dataBase64": b64("escaped\n")}
    )
    sandbox.assert_outside_unchanged()
    if "result" in response:
        assert not os.path.samefile(hard, sandbox.target)
        assert hard.read_text() == "escaped\n"


async def test_proc_self_root_through_process(sandbox: Sandbox) -> None:
    output = await sandbox.run(
        "proc",
        f"echo escaped > /proc/self/root{sandbox.target}; echo self=$?\n"
        f"echo escaped > /proc/1/root{sandbox.target}; echo one=$?\n"
        f"echo escaped > /proc/$$/cwd/../outside/target.txt; echo cwd=$?",
    )
    found = statuses(output)
    assert len(found) == 3 and all(status != 0 for status in found.values()), output
    sandbox.assert_outside_unchanged()


async def test_proc_self_root_through_fs(sandbox: Sandbox) -> None:
    await sandbox.fs_control()
    for uri in [
        f"file:///proc/self/root{sandbox.target}",
        f"file:///proc/thread-self/root{sandbox.target}",
        f"file:///proc/self/root/proc/self/root{sandbox.target}",
    ]:
        assert_denied(await sandbox.fs("fs/writeFile", {"path": uri, "dataBase64": b64("x")}))
    sandbox.assert_outside_unchanged()


# -- protected .git ----------------------------------------------------------------------------


def make_git(sandbox: Sandbox) -> list[str]:
    git = sandbox.ws / ".git"
    git.mkdir()
    (git / "config").write_text("[core]\n")
    return sorted(os.listdir(git))


async def test_rename_protected_git_through_process(sandbox: Sandbox) -> None:
    before = make_git(sandbox)
    output = await sandbox.run(
        "git",
        "mv .git .git-renamed; echo mv=$?\n"
        "rm -rf .git; echo rm=$?\n"
        "echo x > .git/config; echo write=$?\n"
        "mkdir -p elsewhere && mv .git elsewhere/; echo move=$?",
    )
    found = statuses(output)
    assert len(found) == 4 and all(status != 0 for status in found.values()), output
    assert sorted(os.listdir(sandbox.ws / ".git")) == before
    assert (sandbox.ws / ".git" / "config").read_text() == "[core]\n"
    assert not (sandbox.ws / ".git-renamed").exists()
    sandbox.assert_outside_unchanged()


async def test_rename_protected_git_through_fs(sandbox: Sandbox) -> None:
    """No fs method renames; removing, copying over and writing into `.git` are refused."""
    before = make_git(sandbox)
    await sandbox.fs_control()
    git = sandbox.ws / ".git"
    attempts: list[tuple[str, Json]] = [
        ("fs/remove", {"path": sandbox.uri(git)}),
        ("fs/remove", {"path": sandbox.uri(git / "config")}),
        ("fs/writeFile", {"path": sandbox.uri(git / "config"), "dataBase64": b64("x")}),
        ("fs/writeFile", {"path": sandbox.uri(git / "new"), "dataBase64": b64("x")}),
        (
            "fs/copy",
            {
                "sourcePath": sandbox.uri(sandbox.ws / "fs-control.txt"),
                "destinationPath": sandbox.uri(git / "config"),
                "recursive": False,
            },
        ),
        ("fs/open", {"handleId": "h", "path": sandbox.uri(git / "config"), "mode": "replace"}),
    ]
    for method, params in attempts:
        assert_denied(await sandbox.fs(method, params))
    await sandbox.client.request("fs/close", {"handleId": "h"})
    assert sorted(os.listdir(git)) == before
    assert (git / "config").read_text() == "[core]\n"


async def test_protected_git_created_by_process_does_not_persist(sandbox: Sandbox) -> None:
    """A missing `.git` cannot be created (and so not planted) through the sandbox."""
    output = await sandbox.run(
        "newgit",
        "mkdir .git; echo mkdir=$?; mkdir -p .git/hooks; echo hooks=$?\n"
        "echo x > .git/config; echo config=$?",
    )
    found = statuses(output)
    assert len(found) == 3 and all(status != 0 for status in found.values()), output
    assert not (sandbox.ws / ".git").exists()


# -- network ------------------------------------------------------------------------------------


async def test_network_to_loopback_listener_through_process(sandbox: Sandbox) -> None:
    connect = sandbox.base / "connect.py"
    connect.write_text(
        "import socket, sys\n"
        "try:\n"
        "    s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)\n"
        "    s.sendall(b'escaped\\n')\n"
        "    print('reply', s.recv(8))\n"
        "except OSError as e:\n"
        "    print('denied', e.errno)\n"
    )
    async with TcpListener() as listener:
        output = await sandbox.run("net", f"python3 {connect} {listener.port}; echo net=$?")
        await listener.barrier()
        assert listener.seen() == [], output
    assert "denied" in output and "reply" not in output, output


# -- bubblewrap unavailable ---------------------------------------------------------------------


async def test_missing_bwrap_refuses_sandboxed_requests(tmp_path: Path) -> None:
    """With the configured bubblewrap missing, a request that needs it is refused with an error
    naming bubblewrap, and nothing runs: no process entry, no file written."""
    ws = tmp_path / "ws"
    ws.mkdir()
    logs = tmp_path / "server"
    logs.mkdir()
    env = {**os.environ, "EXECSERVER_BWRAP": "/nonexistent/bwrap"}
    async with (
        running_server("ours", logs, env=env) as server,
        await WireClient.connect(server.url) as client,
    ):
        await client.initialize()
        sandbox = Sandbox(client, tmp_path)
        start = await client.request("process/start", sandbox.start_params("p", "touch ran"))
        assert "error" in start, start
        assert start["error"]["code"] == -32602, start
        message = start["error"]["message"]
        assert message.startswith("failed to prepare process sandbox: "), message
        assert "bwrap" in message.lower() or "bubblewrap" in message.lower(), message
        read = await client.request("process/read", {"processId": "p"})
        assert read.get("error", {}).get("message") == "unknown process id p", read
        write = await sandbox.fs(
            "fs/writeFile", {"path": sandbox.uri(ws / "written"), "dataBase64": b64("x")}
        )
        assert "error" in write, write
        assert write["error"]["code"] == -32600, write
        message = write["error"]["message"]
        assert message.startswith("failed to prepare fs sandbox: "), message
        assert "bwrap" in message.lower() or "bubblewrap" in message.lower(), message
        assert not any(m.get("method", "").startswith("process/") for m in client.messages)
    assert sorted(os.listdir(ws)) == []
