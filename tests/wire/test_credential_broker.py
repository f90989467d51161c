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
BASIC = base64.b64encode(f"x-access-token:{ENTERPRISE}".encode()).decode()
_DUMMY = re.compile(r"ghp_masked[A-Za-z0-9]+|vendor_[a-z]{24}")


def _curl(url: str, header: str, *flags: str) -> str:
    return " ".join(["curl -sS -o /dev/null", *flags, f'-H "{header}"', url, "|| echo failed"])


CHILD_ENV = {
    "PATH": "/usr/bin:/bin",
    "GH_HOST": "localhost",
    "GH_ENTERPRISE_TOKEN": ENTERPRISE,
    "VENDOR_TOKEN": VENDOR,
}


def _masked(value: str) -> str:
    return _DUMMY.sub(lambda m: m[0] if m[0] in (ENTERPRISE, VENDOR) else "<dummy>", value)


def _seen(server: HttpTestServer) -> list[Any]:
    """(method, path, credential headers with dummies masked) of every request, in order."""
    return [
        (r.method, r.path, _masked(";".join(r.header("authorization") + r.header("x-api-key"))))
        for r in server.requests
    ]


async def _run_under(kind: str, tmp_path: Path, script: str, proxy: Json) -> tuple[str, Any]:
    """Run `bash -c script` with CHILD_ENV under `kind`'s managed proxy (credential masking on,
    `proxy` added); its output and the audited decisions (timestamp and client left out)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    home = tempfile.mkdtemp(prefix="cred-home-", dir=CACHE_DIR)
    env = {**os.environ, "SSL_CERT_FILE": str(tmp_path / "ca.pem"), "CODEX_HOME": home}
    launch = {"proxy": {**PROXY, "credentialMasking": True, **proxy}}
    params = process_params("c", ["/bin/bash", "-c", script], env=CHILD_ENV, networkProxy=launch)
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
    decisions = [
        {k: v for k, v in m["params"].items() if k not in ("timestamp", "client")}
        for m in client.notifications("network/policyDecision", processId="c")
    ]
    return output, decisions


async def _observe(kind: str, tmp_path: Path, tls: HttpTestServer, plain: HttpTestServer) -> Any:
    tls.requests.clear()
    plain.requests.clear()
    https = f"https://localhost:{tls.port}"
    script = "; ".join(
        [
            _curl(f"{https}/v1/a", "Authorization: Bearer $GH_ENTERPRISE_TOKEN"),
            _curl(
                f"http://localhost:{plain.port}/plain", "Authorization: Bearer $GH_ENTERPRISE_TOKEN"
            ),
            _curl(f"https://127.0.0.1:{tls.port}/v1/a", "Authorization: token $GH_ENTERPRISE_TOKEN",
                  "-k"),
            _curl(f"{https}/v1/a", "Authorization: Bearer $GH_ENTERPRISE_TOKEN",
                  '-x "$ALL_PROXY"'),
            f'curl -sS -o /dev/null -u "x-access-token:$GH_ENTERPRISE_TOKEN" {https}/v1/a',
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
    proxy = {
        "credentialProviders": providers,
        "domains": {"localhost": "allow", "127.0.0.1": "allow"},
    }
    output, _ = await _run_under(kind, tmp_path, script, proxy)
    return {"output": output, "tls": _seen(tls), "plain": _seen(plain)}


@pytest.mark.reference
async def test_broker_swaps_like_the_reference(tmp_path: Path) -> None:
    """GH_ENTERPRISE_TOKEN (bound to GH_HOST=localhost): real inside TLS to localhost (through
    CONNECT and through SOCKS5), dummy over plain HTTP and to 127.0.0.1 (not the bound name); a
    custom provider's header with its prefix: real under its URL prefix, dummy outside it."""
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
            ("GET", "/v1/a", f"Bearer {ENTERPRISE}"),
            ("GET", "/v1/a", "token <dummy>"),
            ("GET", "/v1/a", f"Bearer {ENTERPRISE}"),  # through SOCKS5
            ("GET", "/v1/a", f"Basic {BASIC}"),  # as git sends a token
            ("GET", "/v1/a", f"Key {VENDOR}"),
            ("GET", "/v2/b", "Key <dummy>"),
        ],
        "plain": [("GET", "/plain", "Bearer <dummy>")],
    }


@pytest.mark.reference
async def test_limited_mode_checks_each_intercepted_request_like_the_reference(
    tmp_path: Path,
) -> None:
    """In limited mode a CONNECT to a bound host is intercepted instead of refused (the
    reference's `MITM required` no longer applies); inside it GET goes on with the real value,
    POST and PUT get the mode's `403` and reach nothing; only the CONNECTs are audited."""
    require_reference()
    context = server_context(tmp_path, ["localhost"])
    async with http_test_server({"/x": echo()}, tls=context) as tls:
        url = f"https://localhost:{tls.port}/x"
        curl = (
            "curl -sS --http1.1 -o /dev/null -w '%{http_code} %header{x-proxy-error}\\n'"
            ' -H "Authorization: Bearer $GH_ENTERPRISE_TOKEN"'
        )
        script = f"{curl} {url}; {curl} -X POST -d a=b {url}; {curl} -X PUT {url}"
        proxy = {"mode": "limited", "domains": {"localhost": "allow"}}
        observed = {}
        for kind in ("reference", "ours"):
            tls.requests.clear()
            output, decisions = await _run_under(kind, tmp_path, script, proxy)
            observed[kind] = (output.splitlines(), decisions, _seen(tls))
    assert observed["ours"] == observed["reference"]
    assert observed["ours"][0] == [
        "200 ",
        "403 blocked-by-method-policy",
        "403 blocked-by-method-policy",
    ]
    assert [d["method"] for d in observed["ours"][1]] == ["CONNECT"] * 3
    assert observed["ours"][2] == [("GET", "/x", f"Bearer {ENTERPRISE}")]


@pytest.mark.reference
async def test_intercepted_tls_speaks_http1(tmp_path: Path) -> None:
    """Deliberate difference `credential_broker_http1_only`: inside an intercepted tunnel our
    proxy offers only HTTP/1.1 (ALPN), the reference HTTP/2 too; a client offering both gets
    1.1 from us and 2 from the reference, the same answer and the same swap either way."""
    require_reference()
    context = server_context(tmp_path, ["localhost"])
    async with http_test_server({"/x": echo()}, tls=context) as tls:
        url = f"https://localhost:{tls.port}/x"
        script = (
            "curl -sS -o /dev/null -w '%{http_version} %{http_code}\\n'"
            f' -H "Authorization: Bearer $GH_ENTERPRISE_TOKEN" {url}'
        )
        observed = {}
        for kind in ("reference", "ours"):
            tls.requests.clear()
            output, _ = await _run_under(
                kind, tmp_path, script, {"domains": {"localhost": "allow"}}
            )
            observed[kind] = (output, _seen(tls))
    assert observed["ours"][0] == "1.1 200\n"
    assert observed["reference"][0] == "2 200\n"
    assert (
        observed["ours"][1] == observed["reference"][1] == [("GET", "/x", f"Bearer {ENTERPRISE}")]
    )
