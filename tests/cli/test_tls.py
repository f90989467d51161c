"""TLS: `serve --listen wss://` with a certificate the test makes, re-read when the files
change; the client trusts the system store or `--cacert`, and never falls back to ws://."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cli.support import cli_env, no_traceback, run_cli
from tests.conftest import TIME
from tests.harness.polling import poll
from tests.harness.servers import RunningServer, generation, ours_command, running_server
from tests.harness.tls import CertificateAuthority


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca = CertificateAuthority.make("execserver test CA")
    ca.write(tmp_path / "ca.pem")
    ca.issue("127.0.0.1").write(tmp_path / "server.pem", tmp_path / "server.key")
    other = CertificateAuthority.make("another CA")
    other.write(tmp_path / "other-ca.pem")
    other.issue("127.0.0.1").write(tmp_path / "next.pem", tmp_path / "next.key")
    return {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "server.pem",
        "key": tmp_path / "server.key",
        "other_ca": tmp_path / "other-ca.pem",
        "next_cert": tmp_path / "next.pem",
        "next_key": tmp_path / "next.key",
    }


@contextlib.asynccontextmanager
async def tls_server(pki: dict[str, Path], tmp_path: Path) -> AsyncIterator[RunningServer]:
    # The last --listen wins: the harness puts its ws:// one first.
    flags = ["--listen", "wss://127.0.0.1:0", "--tls-cert", str(pki["cert"])]
    async with running_server(
        "ours", tmp_path, extra=[*flags, "--tls-key", str(pki["key"])]
    ) as server:
        yield server


async def test_wss_trusted_through_cacert_or_the_system_store(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    """The server prints a wss:// URL; --cacert, $EXECSERVER_CACERT and the system trust store
    (OpenSSL's SSL_CERT_FILE stands in for it here) each make the client trust it."""
    async with tls_server(pki, tmp_path) as server:
        assert server.url.startswith("wss://127.0.0.1:")
        code, stdout, stderr = await run_cli("info", server.url, "--cacert", str(pki["ca"]))
        assert code == 0, stderr
        assert json.loads(stdout)["platformOs"] == "linux"
        env = cli_env(EXECSERVER_CACERT=str(pki["ca"]))
        code, stdout, _ = await run_cli("run", server.url, "--", "echo", "over-tls", env=env)
        assert (code, stdout) == (0, b"over-tls\n")
        env = cli_env(SSL_CERT_FILE=str(pki["ca"]))
        code, stdout, _ = await run_cli("run", server.url, "--", "echo", "system", env=env)
        assert (code, stdout) == (0, b"system\n")


async def test_untrusted_or_plain_connections_fail_clearly(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    """An unknown CA, the wrong CA, or ws:// to a TLS port: exit 255 with one line that says
    what to do; nothing falls back to an unencrypted connection."""
    async with tls_server(pki, tmp_path) as server:
        code, _, stderr = await run_cli("run", server.url, "--", "true")
        assert code == 255
        assert b"TLS certificate is not trusted" in stderr and b"--cacert FILE" in stderr
        assert stderr.count(b"\n") == 1
        code, _, stderr = await run_cli(
            "run", server.url, "--cacert", str(pki["other_ca"]), "--", "true"
        )
        assert code == 255 and b"not trusted" in stderr
        plain = "ws://" + server.url.removeprefix("wss://")
        code, _, stderr = await run_cli("run", plain, "--", "true")
        assert code == 255 and b"a wss:// server? then use wss://" in stderr
        no_traceback(stderr)
    # A --cacert for a plain URL is a mistake, not something to ignore.
    code, _, stderr = await run_cli("info", "ws://127.0.0.1:1", "--cacert", str(pki["ca"]))
    assert (code, stderr) == (
        2,
        b"execserver: --cacert is for wss:// TARGETs, not `ws://127.0.0.1:1`\n",
    )


async def test_certificate_is_reloaded_when_its_files_change(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    """New files (another CA's certificate) are served to new connections without a restart;
    a half-written pair (a key that does not match) keeps the old certificate."""
    async with tls_server(pki, tmp_path) as server:
        pki["cert"].write_bytes(pki["next_cert"].read_bytes())  # the key does not match yet
        deadline = asyncio.get_running_loop().time() + 20 * TIME
        # The files are looked at no more than once a second: handshake until the server has
        # seen the half-written pair (and kept serving the old one).
        while "TLS certificate not reloaded" not in server.stderr():
            code, _, stderr = await run_cli("info", server.url, "--cacert", str(pki["ca"]))
            assert code == 0, stderr
            assert asyncio.get_running_loop().time() < deadline, "the pair was never looked at"
        os.replace(pki["next_key"], pki["key"])
        deadline = asyncio.get_running_loop().time() + 20 * TIME
        while True:  # each handshake re-checks the files (at most once a second)
            code, _, stderr = await run_cli("info", server.url, "--cacert", str(pki["other_ca"]))
            if code == 0 or asyncio.get_running_loop().time() > deadline:
                break
        assert code == 0, stderr
        code, _, _ = await run_cli("info", server.url, "--cacert", str(pki["ca"]))
        assert code == 255


@pytest.mark.parametrize(
    ("listen", "flags", "message"),
    [
        (
            "wss://127.0.0.1:0",
            [],
            "a wss:// --listen needs both --tls-cert FILE and --tls-key FILE",
        ),
        (
            "ws://127.0.0.1:0",
            ["--tls-cert", "{d}/server.pem"],
            "--tls-cert and --tls-key need a wss:// --listen",
        ),
        (
            "wss://127.0.0.1:0",
            ["--tls-cert", "{d}/server.pem", "--tls-key", "{d}/missing"],
            "cannot read {d}/missing: No such file or directory",
        ),
        (
            "wss://127.0.0.1:0",
            ["--tls-cert", "{d}/server.pem", "--tls-key", "{d}/ca.pem"],
            "cannot load TLS certificate",
        ),
    ],
)
def test_bad_tls_settings_refuse_to_start(
    pki: dict[str, Path], listen: str, flags: list[str], message: str
) -> None:
    directory = str(pki["ca"].parent)
    command = ours_command(listen, [flag.replace("{d}", directory) for flag in flags])
    result = subprocess.run(
        command, capture_output=True, timeout=30 * TIME, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 1
    assert result.stderr.decode().startswith("Error: " + message.replace("{d}", directory))


async def test_wss_listener_survives_an_upgrade_in_place(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    """SIGHUP (upgrade in place) keeps the wss:// listener a wss:// one: the new image serves
    TLS on the carried-over socket, with the certificate read from its files again."""
    async with tls_server(pki, tmp_path) as server:
        os.kill(server.pid, signal.SIGHUP)
        await poll(lambda: generation(server) == 1, 60, "the upgrade")
        code, stdout, stderr = await run_cli(
            "run", server.url, "--cacert", str(pki["ca"]), "--", "echo", "still-tls"
        )
        assert (code, stdout) == (0, b"still-tls\n"), stderr
