"""deploy/: the systemd unit and the container image definition, checked as far as this
machine can: systemd's own verifier and security analysis, the unit's command line run for
real, the Dockerfile through the official parser and hadolint, and its entrypoint script.
(No container engine runs here, so the image itself is not built.)"""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from execserver.cli import build_parser
from tests.cli.support import cli_env, run_cli
from tests.conftest import IN_CI, TIME
from tests.harness.servers import REPO_ROOT
from tests.harness.tls import CertificateAuthority

UNIT = REPO_ROOT / "deploy/systemd/execserver.service"
DOCKERFILE = REPO_ROOT / "deploy/container/Dockerfile"
ENTRYPOINT = REPO_ROOT / "deploy/container/entrypoint.sh"
VENV_BIN = Path(sys.executable).parent


def _require(tool: str) -> str:
    path = shutil.which(tool) or (str(VENV_BIN / tool) if (VENV_BIN / tool).exists() else None)
    if path is None:
        if IN_CI:
            pytest.fail(f"CI=true but {tool} is not installed")
        pytest.skip(f"{tool} is not installed")
    return path


def _unit_with_our_binary(tmp_path: Path) -> Path:
    text = UNIT.read_text().replace(
        "/opt/execserver/.venv/bin/execserver", str(VENV_BIN / "execserver")
    )
    path = tmp_path / "execserver.service"
    path.write_text(text)
    return path


def _exec_start() -> list[str]:
    text = UNIT.read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def test_systemd_unit_verifies_cleanly(tmp_path: Path) -> None:
    analyze = _require("systemd-analyze")
    unit = _unit_with_our_binary(tmp_path)
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, timeout=60 * TIME)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"", b""), result.stderr
    security = subprocess.run(
        [analyze, "security", "--offline=yes", str(unit)], capture_output=True, timeout=60 * TIME
    )
    level = re.search(rb"Overall exposure level for execserver.service: ([\d.]+)", security.stdout)
    assert level is not None, security.stdout
    assert float(level.group(1)) < 5.0  # systemd's scale: 10 is unprotected


def test_systemd_unit_runs_as_a_user_with_a_credential() -> None:
    text = UNIT.read_text()
    assert re.search(r"^User=execserver$", text, re.M)
    assert re.search(r"^LoadCredential=token:/etc/execserver/token$", text, re.M)
    assert "--ws-token-file %d/token" in text
    for option in ("NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet="):
        assert re.search(rf"^{re.escape(option)}$", text, re.M), option


async def test_systemd_command_line_serves(tmp_path: Path) -> None:
    """The unit's ExecStart, with the credential directory (%d) and certificate paths pointed
    at test files and port 0, starts a TLS server that our client can use."""
    ca = CertificateAuthority.make("deploy test CA")
    ca.write(tmp_path / "ca.pem")
    ca.issue("127.0.0.1").write(tmp_path / "fullchain.pem", tmp_path / "privkey.pem")
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    code, _, _ = await run_cli("token", "new", "--out", str(credentials / "token"))
    assert code == 0
    argv = [
        arg.replace("%d", str(credentials))
        .replace("/etc/execserver/tls", str(tmp_path))
        .replace(":8765", ":0")
        for arg in _exec_start()
    ]
    assert argv[0].endswith("/bin/execserver") and argv[1] == "serve"
    server = await asyncio.create_subprocess_exec(
        str(VENV_BIN / "execserver"), *argv[1:],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        url = (await asyncio.wait_for(server.stdout.readline(), 30 * TIME)).decode().strip()
        assert url.startswith("wss://0.0.0.0:")
        target = "wss://127.0.0.1:" + url.rsplit(":", 1)[1]
        code, stdout, stderr = await run_cli(
            "run", target, "--cacert", str(tmp_path / "ca.pem"),
            "--token-file", str(credentials / "token"), "--", "echo", "deployed",
        )  # fmt: skip
        assert (code, stdout) == (0, b"deployed\n"), stderr
    finally:
        server.terminate()
        assert await server.wait() == 0


def test_dockerfile_parses_and_lints() -> None:
    dockerfile = pytest.importorskip("dockerfile")  # a test dependency (pyproject.toml)
    commands = dockerfile.parse_file(str(DOCKERFILE))
    final = commands[max(i for i, c in enumerate(commands) if c.cmd == "FROM") :]
    by_kind: dict[str, list[tuple[str, ...]]] = {}
    for command in final:
        by_kind.setdefault(command.cmd, []).append(command.value)
    user = by_kind["USER"][-1][0]
    assert user.split(":")[0] not in ("0", "root")
    entrypoint = next(c for c in final if c.cmd == "ENTRYPOINT")
    assert entrypoint.json  # exec form: the server is PID 1 and gets SIGTERM
    cmd = next(c for c in final if c.cmd == "CMD")
    assert cmd.json
    build_parser().parse_args(list(cmd.value))  # the default command is a valid one
    for command in commands:
        if command.cmd == "COPY" and not any(f.startswith("--from") for f in command.flags):
            for source in command.value[:-1]:
                assert (REPO_ROOT / source).exists(), source
    hadolint = _require("hadolint")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, timeout=60 * TIME)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--version"], b"execserver 0."),
        (["serve", "--version"], b"execserver 0."),
        (["relay", "--version"], b"execserver 0."),
        (["token", "new"], b""),
    ],
)
def test_container_entrypoint_dispatches(args: list[str], expect: bytes) -> None:
    """Options alone go to `serve`; `serve`, `relay` and other commands run as given."""
    assert ENTRYPOINT.stat().st_mode & 0o111
    env = cli_env(PATH=f"{VENV_BIN}:/usr/bin:/bin")
    result = subprocess.run(
        [str(ENTRYPOINT), *args], capture_output=True, timeout=60 * TIME, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(expect) and result.stdout.strip()
