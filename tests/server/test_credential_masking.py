"""Credential masking (`networkProxy.proxy.credentialMasking`) with real clients: the proxied
program (curl, Python's urllib) sees dummies and trusts the executor's CA through the variables
the executor exports; an HTTPS server the test starts on 127.0.0.1, with a certificate from a CA
the test makes (trusted by the executor through its own SSL_CERT_FILE), records what arrives.

The bound host is `localhost`: GitHub Enterprise tokens are bound to the host `GH_HOST` names,
and custom providers to their URL prefixes, so no name needs mapping. Hosts a credential is not
bound to, paths outside a provider's prefixes and plain HTTP only ever see the dummy."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import ssl
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_bwrap
from tests.harness.httpserver import HttpTestServer, echo, http_test_server
from tests.harness.tls import server_context
from tests.harness.wire import Json, WireClient, process_params
from tests.server.conftest import StartServer
from tests.server.test_network_proxy import run
from tests.wire.cases_network import PROXY

ENTERPRISE = "ghp_Enterprise0123456789abcdefghijklmnopq"
CLOUD = "ghp_Cloud0123456789abcdefghijklmnopqrstuv"
OPENAI = "sk-proj-" + "Ab3De6Gh9J" * 5 + "x"
VENDOR = "vendor_abcdefghijklmnopqrstuvwx"
SECRETS = (ENTERPRISE, CLOUD, OPENAI, VENDOR)


@pytest.fixture
def https(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A server context for `localhost` and 127.0.0.1 whose CA the executor trusts; the
    executor's CODEX_HOME is a fresh directory."""
    context = server_context(tmp_path, ["localhost", "127.0.0.1"], ca_name="test-ca.pem")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "test-ca.pem"))
    (tmp_path / "codex-home").mkdir()
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "codex-home"))
    return context


def launch(**proxy: Any) -> Json:
    return {"proxy": {**PROXY, "credentialMasking": True, **proxy}}


def received(server: HttpTestServer, header: str) -> list[tuple[str, str]]:
    """(path, value of `header`) of every request the server got, in order."""
    return [(r.path, (r.header(header) or [""])[0]) for r in server.requests]


def curl(url: str, header: str, *, insecure: bool = False) -> str:
    flags = "-sS -k" if insecure else "-sS"
    return f'curl {flags} -o /dev/null -H "{header}" {url} || echo curl-failed'


async def test_builtin_github_enterprise_token_swapped_only_in_tls_to_its_host(
    start_server: StartServer, https: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    """GH_ENTERPRISE_TOKEN bound to GH_HOST=localhost: the child sees a dummy of the same shape;
    curl and urllib over HTTPS to localhost (through the proxy, trusting its CA) deliver the real
    token; the cloud token to the same host, the enterprise token to 127.0.0.1 (same server, not
    bound) and over plain HTTP stay dummies."""
    caplog.set_level(logging.DEBUG)
    _, url = await start_server()
    async with (
        http_test_server({"/x": echo(), "/ip": echo()}, tls=https) as server,
        http_test_server({"/plain": echo()}) as plain,
        await WireClient.connect(url) as client,
    ):
        await client.initialize()
        port = server.port
        script = "; ".join(
            [
                'echo "E=$GH_ENTERPRISE_TOKEN C=$GH_TOKEN"',
                curl(f"https://localhost:{port}/x", "Authorization: Bearer $GH_ENTERPRISE_TOKEN"),
                curl(f"https://localhost:{port}/x", "Authorization: token $GH_TOKEN"),
                curl(
                    f"https://127.0.0.1:{port}/ip",
                    "Authorization: Bearer $GH_ENTERPRISE_TOKEN",
                    insecure=True,
                ),
                curl(
                    f"http://localhost:{plain.port}/plain",
                    "Authorization: Bearer $GH_ENTERPRISE_TOKEN",
                ),
                f'{sys.executable} -c "import os, urllib.request as u; '
                f"u.urlopen(u.Request('https://localhost:{port}/x', headers={{'Authorization': "
                "'token ' + os.environ['GH_ENTERPRISE_TOKEN']}))\"",
            ]
        )
        env = {
            "PATH": "/usr/bin:/bin",
            "GH_HOST": "localhost",
            "GH_ENTERPRISE_TOKEN": ENTERPRISE,
            "GH_TOKEN": CLOUD,
        }
        domains = {"localhost": "allow", "127.0.0.1": "allow"}
        output = await run(
            client, "gh", ["/bin/sh", "-c", script], env=env, networkProxy=launch(domains=domains)
        )
    first = output.splitlines()[0]
    shown = dict(part.split("=", 1) for part in first.split())
    assert "curl-failed" not in output, output
    for name, real in (("E", ENTERPRISE), ("C", CLOUD)):
        assert shown[name] != real and len(shown[name]) == len(real)
        assert shown[name].startswith("ghp_masked")  # the reference's shape
    assert received(server, "authorization") == [
        ("/x", f"Bearer {ENTERPRISE}"),
        ("/x", f"token {shown['C']}"),  # the cloud token is bound to GitHub, not localhost
        ("/ip", f"Bearer {shown['E']}"),  # 127.0.0.1 is not the bound name: not intercepted
        ("/x", f"token {ENTERPRISE}"),  # urllib
    ]
    assert received(plain, "authorization") == [("/plain", f"Bearer {shown['E']}")]
    assert not any(secret in caplog.text for secret in SECRETS)


async def test_custom_provider_header_with_prefix_only_under_its_url_prefix(
    start_server: StartServer, https: ssl.SSLContext
) -> None:
    """A custom provider (env, pattern, URL prefix, `header` auth with a prefix): its dummy
    matches the pattern, is swapped under the prefix and left alone elsewhere on the same host;
    a value that does not match the pattern is not masked."""
    _, url = await start_server()
    async with (
        http_test_server({"/v1/a": echo(), "/v2/b": echo()}, tls=https) as server,
        await WireClient.connect(url) as client,
    ):
        await client.initialize()
        port = server.port
        providers = {
            "vendor": {
                "env": ["VENDOR_TOKEN", "VENDOR_OTHER"],
                "patterns": ["vendor_[a-z]{24}"],
                "url_prefixes": [f"https://localhost:{port}/v1"],
                "auth": ["header"],
                "header": "X-Api-Key",
                "prefix": "Key ",
            }
        }
        script = "; ".join(
            [
                'echo "V=$VENDOR_TOKEN O=$VENDOR_OTHER"',
                curl(f"https://localhost:{port}/v1/a", "X-Api-Key: Key $VENDOR_TOKEN"),
                curl(f"https://localhost:{port}/v2/b", "X-Api-Key: Key $VENDOR_TOKEN"),
                curl(f"https://localhost:{port}/v1/a", "Authorization: Bearer $VENDOR_TOKEN"),
            ]
        )
        env = {"PATH": "/usr/bin:/bin", "VENDOR_TOKEN": VENDOR, "VENDOR_OTHER": "not-a-match"}
        proxy = launch(domains={"localhost": "allow"}, credentialProviders=providers)
        output = await run(client, "v", ["/bin/sh", "-c", script], env=env, networkProxy=proxy)
    assert "curl-failed" not in output, output
    shown = dict(part.split("=", 1) for part in output.splitlines()[0].split())
    dummy = shown["V"]
    assert dummy != VENDOR and dummy.startswith("vendor_") and len(dummy) == len(VENDOR)
    assert shown["O"] == "not-a-match"
    assert received(server, "x-api-key") == [
        ("/v1/a", f"Key {VENDOR}"),
        ("/v2/b", f"Key {dummy}"),
        ("/v1/a", ""),
    ]
    assert received(server, "authorization")[2] == ("/v1/a", f"Bearer {dummy}")  # not its auth


async def test_ca_bundle_files_and_variables(
    start_server: StartServer, https: ssl.SSLContext
) -> None:
    """The exported variables all name one bundle under $CODEX_HOME/proxy (owner-only files in
    an owner-only directory): the system's roots followed by the executor's CA; no private key
    is ever written; without secrets in the environment nothing else changes."""
    _, url = await start_server()
    async with await WireClient.connect(url) as client:
        await client.initialize()
        output = await run(client, "env", ["/usr/bin/env"], networkProxy=launch())
    env = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    names = [
        "SSL_CERT_FILE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
        "GIT_SSL_CAINFO", "PIP_CERT", "DENO_CERT", "BUNDLE_SSL_CA_CERT", "CARGO_HTTP_CAINFO",
        "NPM_CONFIG_CAFILE", "npm_config_cafile", "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE",
        "CODEX_CA_CERTIFICATE",
    ]  # fmt: skip
    bundle = Path(env["SSL_CERT_FILE"])
    assert {env[name] for name in names} == {str(bundle)}
    home = Path(os.environ["CODEX_HOME"]) / "proxy"
    assert bundle.parent == home and bundle.name.startswith("ca-bundle-")
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    files = sorted(home.iterdir())
    assert [p.name.startswith(("ca-", "ca-bundle-")) for p in files] == [True, True]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert b"PRIVATE KEY" not in path.read_bytes()
    [ca] = [p for p in files if p != bundle]
    assert bundle.read_bytes().endswith(ca.read_bytes())
    assert b"network_proxy MITM CA" in base64.b64decode(
        b"".join(ca.read_bytes().splitlines()[1:-1])
    )


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        ({"env": [], "patterns": ["x{5}"]}, "credential provider `v` has no environment keys"),
        (
            {"env": ["A"], "patterns": ["x{5}"]},
            "credential provider `v` has no destination URL prefixes",
        ),
        (
            {"env": ["GH_TOKEN"], "patterns": ["x{5}"], "url_prefixes": ["https://a.test"]},
            "credential provider `v` overlaps a built-in credential source",
        ),
        (
            {"env": ["A"], "patterns": ["x*"], "url_prefixes": ["https://a.test"]},
            "invalid credential pattern for provider `v`",
        ),
        (
            {"env": ["A"], "patterns": ["x{5}"], "url_prefixes": ["ftp://a.test"]},
            "invalid destination for credential provider `v`",
        ),
        (
            {"env": ["A"], "patterns": ["x{5}"], "url_prefixes": ["https://a.test"], "prefix": "K"},
            "credential provider `v` requires header authentication to use a header prefix",
        ),
    ],
)
async def test_unusable_custom_provider_refused(
    start_server: StartServer, provider: Json, message: str
) -> None:
    """A provider the broker cannot use is refused up front (the reference starts the process
    and masks nothing: deliberate difference `credential_masking_masks`)."""
    _, url = await start_server()
    async with await WireClient.connect(url) as client:
        await client.initialize()
        params = process_params(
            "p", ["/bin/true"], networkProxy=launch(credentialProviders={"v": provider})
        )
        response = await client.request("process/start", params)
    assert response["error"] == {
        "code": -32602,
        "message": f"invalid network proxy config: {message}",
    }


async def test_shell_snapshot_replays_dummies(
    start_server: StartServer, https: ssl.SSLContext, tmp_path: Path
) -> None:
    """A login profile that exports secrets itself: the snapshot a masked command replays
    carries dummies, a real value copied into another variable is masked too, and the swap
    still works for the token the profile bound to GH_HOST=localhost."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bash_profile").write_text(
        f"export GH_HOST=localhost GH_ENTERPRISE_TOKEN={ENTERPRISE} OPENAI_API_KEY={OPENAI}\n"
        f"export COPY={OPENAI}\n"
    )
    _, url = await start_server()
    async with (
        http_test_server({"/x": echo()}, tls=https) as server,
        await WireClient.connect(url) as client,
    ):
        await client.initialize()
        script = "; ".join(
            [
                'echo "E=$GH_ENTERPRISE_TOKEN O=$OPENAI_API_KEY C=$COPY"',
                curl(
                    f"https://localhost:{server.port}/x",
                    "Authorization: Bearer $GH_ENTERPRISE_TOKEN",
                ),
            ]
        )
        snapshot = {"scopeId": "s", "shell": {"name": "bash", "path": "/bin/bash"}}
        outputs = [
            await run(
                client,
                f"s{index}",
                ["/bin/bash", "-lc", script],
                env={"PATH": "/usr/bin:/bin", "HOME": str(home)},
                shellSnapshot=snapshot,
                networkProxy=launch(domains={"localhost": "allow"}),
            )
            for index in range(2)  # the capture, then a replay of the cached snapshot
        ]
    for output in outputs:
        assert "curl-failed" not in output, output
        assert not any(secret in output for secret in SECRETS), output
        shown = dict(part.split("=", 1) for part in output.splitlines()[0].split())
        assert shown["E"].startswith("ghp_") and len(shown["E"]) == len(ENTERPRISE)
        assert shown["O"].startswith("sk-proj-") and shown["C"] == shown["O"]
    assert received(server, "authorization") == [("/x", f"Bearer {ENTERPRISE}")] * 2


class HostMapper:
    """An HTTP CONNECT proxy that takes every tunnel, whatever it names, to one local port:
    the executor's own upstream proxy in the test, so `api.github.com` reaches the test's
    server (no DNS or internet needed). Records the names asked for."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.asked: list[str] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.asked.append(head.split(b" ", 2)[1].decode())
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(b"HTTP/1.1 200 OK\r\n\r\n")

            async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
                dst.close()

            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def test_builtin_cloud_hosts_through_a_mapped_upstream(
    start_server: StartServer,
    https: ssl.SSLContext,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GH_TOKEN and OPENAI_API_KEY against their real host names (api.github.com,
    api.openai.com), which the executor's own upstream proxy (`allowUpstreamProxy`) maps to the
    test's HTTPS server: each real value arrives only at its own host."""
    cloud = server_context(tmp_path, ["api.github.com", "api.openai.com"], ca_name="cloud-ca.pem")
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "cloud-ca.pem"))
    _, url = await start_server()
    async with http_test_server({"/user": echo(), "/v1/models": echo()}, tls=cloud) as server:
        mapper = HostMapper(server.port)
        async with mapper as mapper_url, await WireClient.connect(url) as client:
            monkeypatch.setenv("HTTPS_PROXY", mapper_url)
            await client.initialize()
            script = "; ".join(
                [
                    curl("https://api.github.com/user", "Authorization: token $GH_TOKEN"),
                    curl(
                        "https://api.openai.com/v1/models", "Authorization: Bearer $OPENAI_API_KEY"
                    ),
                    curl("https://api.openai.com/v1/models", "Authorization: token $GH_TOKEN"),
                    'echo "G=$GH_TOKEN"',
                ]
            )
            domains = {"api.github.com": "allow", "api.openai.com": "allow"}
            proxy = launch(domains=domains, allowUpstreamProxy=True, allowLocalBinding=True)
            env = {"PATH": "/usr/bin:/bin", "GH_TOKEN": CLOUD, "OPENAI_API_KEY": OPENAI}
            output = await run(client, "c", ["/bin/sh", "-c", script], env=env, networkProxy=proxy)
    assert "curl-failed" not in output, output
    dummy = output.splitlines()[-1].removeprefix("G=")
    assert dummy != CLOUD and len(dummy) == len(CLOUD)
    assert received(server, "authorization") == [
        ("/user", f"token {CLOUD}"),
        ("/v1/models", f"Bearer {OPENAI}"),
        ("/v1/models", f"token {dummy}"),  # the GitHub token is not OpenAI's
    ]
    assert mapper.asked == ["api.github.com:443", "api.openai.com:443", "api.openai.com:443"]


async def test_managed_sandbox_sees_the_bundle(
    start_server: StartServer, https: ssl.SSLContext
) -> None:
    """Under a managed sandbox whose filesystem view is minimal, the CA bundle the variables
    name is readable (as in the reference), so the swap works from inside the sandbox too."""
    require_bwrap()
    minimal_view = {
        "permissions": {
            "type": "managed",
            "file_system": {
                "type": "restricted",
                "entries": [
                    {"path": {"type": "special", "value": {"kind": "minimal"}}, "access": "read"}
                ],
            },
            "network": "enabled",
        },
        "windowsSandboxLevel": "disabled",
    }
    _, url = await start_server()
    async with (
        http_test_server({"/x": echo()}, tls=https) as server,
        await WireClient.connect(url) as client,
    ):
        await client.initialize()
        script = curl(
            f"https://localhost:{server.port}/x", "Authorization: Bearer $GH_ENTERPRISE_TOKEN"
        )
        env = {"PATH": "/usr/bin:/bin", "GH_HOST": "localhost", "GH_ENTERPRISE_TOKEN": ENTERPRISE}
        output = await run(
            client,
            "m",
            ["/bin/sh", "-c", script],
            env=env,
            cwd="file:///",
            sandbox=minimal_view,
            enforceManagedNetwork=True,
            networkProxy=launch(domains={"localhost": "allow"}),
        )
    assert "curl-failed" not in output, output
    assert received(server, "authorization") == [("/x", f"Bearer {ENTERPRISE}")]
