"""Credential masking compared with the reference on the network: the same `bash -c` command
(the form codex 0.171 masks) runs under each executor's managed proxy with curl, against one
HTTPS server and one plain HTTP server the test starts on 127.0.0.1. Each executor is started
with SSL_CERT_FILE naming the test's CA (both use it to verify the destination) and a CODEX_HOME
of its own outside /tmp (the reference sets up its helper aliases there).

What is compared is what arrived where, with each dummy replaced by `<dummy>` (they are random):
the real value only inside TLS to the bound host under the bound URL, the dummy everywhere else.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TIME, require_reference
from tests.harness.httpserver import HttpTestServer, echo, http_test_server
from tests.harness.servers import CACHE_DIR, running_server
from tests.harness.tls import server_context
from tests.harness.wire import Json, WireClient, process_params
from tests.wire.cases_network import PROXY

ENTERPRISE = "ghp_Enterprise0123456789abcdefghijklmnopq"
VENDOR = "vendor_abcdefghijklmnopqrstuvwx"
_DUMMY = re.compile(r"ghp_masked[A-Za-z0-9]+|vendor_[a-z]{24}")


def _curl(url: str, header: str, *flags: str) -> str:
    return " ".join(["curl -sS -o /dev/null", *flags, f'-H "{header}"', url, "|| echo failed"])


async def _observe(kind: str, tmp_path: Path, tls: HttpTestServer, plain: HttpTestServer) -> Any:
    tls.requests.clear()
    plain.requests.clear()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    home = tempfile.mkdtemp(prefix="cred-home-", dir=CACHE_DIR)
    env = {**os.environ, "SSL_CERT_FILE": str(tmp_path / "ca.pem"), "CODEX_HOME": home}
    https = f"https://localhost:{tls.port}"
    script = "; ".join(
        [
            _curl(f"{https}/v1/a", "Authorization: Bearer $GH_ENTERPRISE_TOKEN"),
            _curl(
                f"http://localhost:{plain.port}/plain", "Authorization: Bearer $GH_ENTERPRISE_TOKEN"
            ),
            _curl(f"https://127.0.0.1:{tls.port}/v1/a", "Authorization: token $GH_ENTERPRISE_TOKEN",
                  "-k"),
            _curl(f"{https}/v1/a", "X-Api-Key: Key $VENDOR_TOKEN"),
            _curl(f"{https}/v2/b", "X-Api-Key: Key $VENDOR_TOKEN"),
            'echo "E=${GH_ENTERPRISE_TOKEN:0:10} V=${#VENDOR_TOKEN}"',
        ]
    )  # fmt: skip
    providers = {
        "vendor": {
            "env": ["VENDOR_TOKEN"],
            "patterns": ["vendor_[a-z]{24}"],
            "url_prefixes": [f"{https}/v1"],
            "auth": ["header"],
            "header": "X-Api-Key",
            "prefix": "Key ",
        }
    }
    launch: Json = {
        "proxy": {
            **PROXY,
            "credentialMasking": True,
            "credentialProviders": providers,
            "domains": {"localhost": "allow", "127.0.0.1": "allow"},
        }
    }
    child_env = {
        "PATH": "/usr/bin:/bin",
        "GH_HOST": "localhost",
        "GH_ENTERPRISE_TOKEN": ENTERPRISE,
        "VENDOR_TOKEN": VENDOR,
    }
    params = process_params("c", ["/bin/bash", "-c", script], env=child_env, networkProxy=launch)
    try:
        async with (
            running_server(kind, tmp_path, env=env) as server,
            await WireClient.connect(server.url) as client,
        ):
            await client.initialize()
            response = await client.request("process/start", params)
            assert "result" in response, response
            events = await client.process_events("c", timeout=30 * TIME)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    output = b"".join(
        base64.b64decode(e["params"]["chunk"]) for e in events if e["method"] == "process/output"
    ).decode()

    def masked(value: str) -> str:
        return _DUMMY.sub(lambda m: m[0] if m[0] in (ENTERPRISE, VENDOR) else "<dummy>", value)

    def seen(server: HttpTestServer) -> list[Any]:
        return [
            (r.path, masked(";".join(r.header("authorization") + r.header("x-api-key"))))
            for r in server.requests
        ]

    return {"output": output, "tls": seen(tls), "plain": seen(plain)}


@pytest.mark.reference
async def test_broker_swaps_like_the_reference(tmp_path: Path) -> None:
    """GH_ENTERPRISE_TOKEN (bound to GH_HOST=localhost): real inside TLS to localhost, dummy
    over plain HTTP and to 127.0.0.1 (not the bound name); a custom provider's header with its
    prefix: real under its URL prefix, dummy outside it."""
    require_reference()
    context = server_context(tmp_path, ["localhost", "127.0.0.1"])
    routes = {"/v1/a": echo(), "/v2/b": echo()}
    async with (
        http_test_server(routes, tls=context) as tls,
        http_test_server({"/plain": echo()}) as plain,
    ):
        theirs = await _observe("reference", tmp_path, tls, plain)
        mine = await _observe("ours", tmp_path, tls, plain)
    assert mine == theirs
    assert mine == {
        "output": "E=ghp_masked V=31\n",
        "tls": [
            ("/v1/a", f"Bearer {ENTERPRISE}"),
            ("/v1/a", "token <dummy>"),
            ("/v1/a", f"Key {VENDOR}"),
            ("/v2/b", "Key <dummy>"),
        ],
        "plain": [("/plain", "Bearer <dummy>")],
    }
