"""The managed network proxy with real clients: curl and Python's urllib, run as the proxied
process, against an HTTP server the test starts on 127.0.0.1; the proxy's lifetime; the
sandbox's own network namespace (bubblewrap). The reference's answers to the same requests are
compared in tests/wire/cases_network.py; here is what a user's tools see."""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import socket
import sys
from typing import Any

import pytest

from tests.conftest import TIME, require_bwrap
from tests.harness.httpserver import http_test_server, respond
from tests.harness.wire import Json, WireClient, process_params
from tests.server.conftest import StartServer
from tests.wire.cases_network import PROXY


async def run(client: WireClient, process_id: str, argv: list[str], **extra: Any) -> str:
    """Start `argv`, wait for it to close; its output (stderr included)."""
    response = await client.request("process/start", process_params(process_id, argv, **extra))
    assert "result" in response, response
    events = await client.process_events(process_id, timeout=30 * TIME)
    return b"".join(
        base64.b64decode(e["params"]["chunk"]) for e in events if e["method"] == "process/output"
    ).decode()


MINIMAL: Json = {"type": "special", "value": {"kind": "minimal"}}
SHOW_PROXY = "import os, sys; print(os.environ['HTTP_PROXY'], flush=True); sys.stdin.read()"


async def waiting_proxy(client: WireClient, process_id: str, launch: Json) -> str:
    """Start a process that prints its HTTP_PROXY and waits for stdin; that proxy's URL."""
    argv = [sys.executable, "-c", SHOW_PROXY]
    params = process_params(process_id, argv, pipeStdin=True, networkProxy=launch)
    assert "result" in await client.request("process/start", params)
    message = await client.wait_for(
        lambda m: m.get("method") == "process/output" and m["params"]["processId"] == process_id,
        timeout=10 * TIME,
    )
    return base64.b64decode(message["params"]["chunk"]).decode().strip()


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


async def test_curl_and_urllib_through_the_proxy(start_server: StartServer) -> None:
    """Allowed -> the server's answer; not allowlisted or local -> the proxy's 403 with its JSON
    body; SOCKS5 (socks5h) too; Python's urllib follows the same variables."""
    _, url = await start_server()
    async with http_test_server() as server, await WireClient.connect(url) as client:
        server.route("/ok", respond(200, [("Content-Type", "text/plain")], b"from the server"))
        await client.initialize()
        ok = server.url("/ok")
        local = f"http://localhost:{server.port}/ok"
        curl = "curl -s -w ' %{http_code}\\n'"
        script = (
            f"{curl} {ok}; {curl} {local}; {curl} http://example.com/; "
            f'{curl} --proxy "$ALL_PROXY" {ok}; {curl} --proxy "$ALL_PROXY" {local}'
        )
        launch = {"proxy": {**PROXY, "domains": {"127.0.0.1": "allow"}}}
        lines = (await run(client, "c", sh(script), networkProxy=launch)).splitlines()
        assert lines[0] == "from the server 200"
        body, status = lines[1].rsplit(" ", 1)
        assert status == "403"
        assert json.loads(body) == {
            "status": "blocked",
            "host": "localhost",
            "reason": "not_allowed_local",
            "decision": "deny",
            "source": "baseline_policy",
            "protocol": "http",
            "port": server.port,
            "message": "Sandbox policy blocks local/private network addresses.",
        }
        body, status = lines[2].rsplit(" ", 1)
        assert (status, json.loads(body)["reason"]) == ("403", "not_allowed")
        assert lines[3] == "from the server 200"
        assert lines[4].endswith(" 000")  # SOCKS5 refused (reply 02): curl gets no response

        fetch = (
            "import urllib.request, urllib.error, sys\n"
            "for url in sys.argv[1:]:\n"
            "    try:\n"
            "        print(urllib.request.urlopen(url).read().decode())\n"
            "    except urllib.error.HTTPError as e:\n"
            "        print(e.code, e.headers['x-proxy-error'])\n"
        )
        output = await run(
            client, "u", [sys.executable, "-c", fetch, ok, local], networkProxy=launch
        )
        assert output.splitlines() == ["from the server", "403 blocked-by-allowlist"]


async def test_local_binding_lets_local_addresses_bypass_the_proxy(
    start_server: StartServer,
) -> None:
    """With `allowLocalBinding`, NO_PROXY names the local ranges, so tools reach local
    addresses directly; through the proxy, an address the allowlist misses is still refused."""
    _, url = await start_server()
    async with http_test_server() as server, await WireClient.connect(url) as client:
        server.route("/ok", respond(200, [], b"direct"))
        await client.initialize()
        ok = server.url("/ok")
        script = f"curl -s {ok}; echo; curl -s --noproxy '' {ok}"
        launch = {"proxy": {**PROXY, "allowLocalBinding": True}}
        direct, proxied = (await run(client, "l", sh(script), networkProxy=launch)).splitlines()
        assert direct == "direct"
        assert json.loads(proxied)["reason"] == "not_allowed"


async def test_the_proxy_lives_as_long_as_its_process(start_server: StartServer) -> None:
    """The proxy answers while its process runs; once the process has closed, its ports are
    closed too (also when the process was killed)."""
    _, url = await start_server()
    async with await WireClient.connect(url) as client:
        await client.initialize()
        proxy_url = await waiting_proxy(client, "p", {"proxy": PROXY})
        port = int(proxy_url.rsplit(":", 1)[1])
        _, writer = await asyncio.open_connection("127.0.0.1", port)  # it answers
        writer.close()
        await client.request("process/terminate", {"processId": "p"})
        await client.process_events("p", timeout=10 * TIME)
        with socket.socket() as probe:
            code = probe.connect_ex(("127.0.0.1", port))
        assert code == errno.ECONNREFUSED


async def test_a_failed_start_leaves_no_proxy_behind(start_server: StartServer) -> None:
    """A start that fails after the proxy was made (the program is missing) closes it."""
    server, url = await start_server()
    async with await WireClient.connect(url) as client:
        await client.initialize()
        params = process_params("f", ["/no/such/program"], networkProxy={"proxy": PROXY})
        response = await client.request("process/start", params)
        assert response["error"]["data"] == {"kind": "spawnNotFound"}
        ok = await client.request("process/start", process_params("g", ["/bin/true"]))
        assert "result" in ok
    tasks = [t for t in asyncio.all_tasks() if "ManagedProxy" in repr(t.get_coro())]
    assert tasks == []
    await server.aclose()


async def test_managed_sandbox_reaches_only_the_proxy(start_server: StartServer) -> None:
    """Under `enforceManagedNetwork`, even a minimal filesystem view (which must be given the
    helper's Python) reaches the server through the proxy and nothing directly; without
    enforcement an enabled network is the host's."""
    require_bwrap()
    _, url = await start_server()
    async with http_test_server() as server, await WireClient.connect(url) as client:
        server.route("/ok", respond(200, [], b"proxied"))
        await client.initialize()
        ok = server.url("/ok")
        script = (
            f"curl -s {ok}; echo; curl -s --noproxy '*' -o /dev/null -w '%{{http_code}}' {ok}; echo"
        )
        minimal_view = {
            "permissions": {
                "type": "managed",
                "file_system": {
                    "type": "restricted",
                    "entries": [
                        {
                            "path": {"type": "special", "value": {"kind": "minimal"}},
                            "access": "read",
                        }
                    ],
                },
                "network": "enabled",
            },
            "windowsSandboxLevel": "disabled",
        }
        launch = {"proxy": {**PROXY, "domains": {"127.0.0.1": "allow"}}}
        enforced = await run(
            client,
            "m",
            sh(script),
            networkProxy=launch,
            sandbox=minimal_view,
            enforceManagedNetwork=True,
            cwd="file:///",
        )
        assert enforced.splitlines() == ["proxied", "000"]
        open_network = await run(
            client, "o", sh(script), networkProxy=launch, sandbox=minimal_view, cwd="file:///"
        )
        assert open_network.splitlines() == ["proxied", "200"]


async def test_upstream_proxy_of_the_executor(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `allowUpstreamProxy`, plain requests and CONNECT tunnels to public addresses leave
    through the executor's own HTTP proxy (`HTTP_PROXY`/`HTTPS_PROXY` of its environment):
    here the managed proxy of another process, which refuses them (no network needed) and
    audits them. Local addresses are still reached directly, as the reference does."""
    _, url = await start_server()
    async with http_test_server() as server, await WireClient.connect(url) as client:
        server.route("/ok", respond(200, [], b"direct"))
        await client.initialize()
        outer = {"proxy": {**PROXY, "allowLocalBinding": True, "domains": {"127.0.0.1": "allow"}}}
        upstream = await waiting_proxy(client, "up", outer)
        monkeypatch.setenv("HTTP_PROXY", upstream)
        monkeypatch.setenv("HTTPS_PROXY", upstream)
        curl = "curl -s --noproxy '' -o /dev/null -w '%{http_code}\\n'"
        script = (
            f"{curl} http://8.8.8.8:9/; {curl} -p http://8.8.8.8:9/; {curl} {server.url('/ok')}"
        )
        launch = {
            "proxy": {
                **PROXY,
                "allowUpstreamProxy": True,
                "allowLocalBinding": True,
                "domains": {"8.8.8.8": "allow", "127.0.0.1": "allow"},
            }
        }
        output = await run(client, "a", sh(script), networkProxy=launch)
        assert output.splitlines() == ["403", "000", "200"]  # the upstream's refusals, direct
        seen = [
            (m["params"]["protocol"], m["params"]["host"], m["params"]["reason"])
            for m in client.notifications("network/policyDecision", processId="up")
        ]
        assert seen == [
            ("http", "8.8.8.8", "not_allowed"),
            ("https_connect", "8.8.8.8", "not_allowed"),
        ]
        ours = [
            m["params"]["decision"]
            for m in client.notifications("network/policyDecision", processId="a")
        ]
        assert ours == ["allow", "allow", "allow"]


async def test_tcp_upstream_proxy_carries_every_socks_connection(
    start_server: StartServer,
) -> None:
    """`serve --tcp-upstream-proxy HOST:PORT`: SOCKS5 TCP connections leave only through that
    HTTP CONNECT proxy (here another server's managed proxy, which audits them); plain HTTP
    through the HTTP listener stays direct (the upstream sees only the SOCKS connection)."""
    from execserver.local.network.options import ExecutorNetworkOptions, parse_tcp_upstream
    from tests.wire.cases_network import NETCLIENT

    _, outer_url = await start_server()
    async with http_test_server() as server, await WireClient.connect(outer_url) as outer:
        server.route("/socks", respond(200, [], b"via upstream"))
        server.route("/x", respond(200, [], b"direct"))
        await outer.initialize()
        allow_local = {
            "proxy": {**PROXY, "allowLocalBinding": True, "domains": {"127.0.0.1": "allow"}}
        }
        upstream = await waiting_proxy(outer, "up", allow_local)
        network = ExecutorNetworkOptions(tcp_upstream=parse_tcp_upstream(upstream.split("//")[1]))
        _, url = await start_server(network=network)
        async with await WireClient.connect(url) as client:
            await client.initialize()
            ops = [
                "socks", "127.0.0.1", str(server.port),
                "get", server.url("/x"),
            ]  # fmt: skip
            launch = {"proxy": {**PROXY, "domains": {"127.0.0.1": "allow"}}}
            output = await run(client, "s", [sys.executable, NETCLIENT, *ops], networkProxy=launch)
        results = [json.loads(line)["result"] for line in output.splitlines()]
        assert results[0]["reply"] == 0 and results[0]["tunnel"]["body"] == "via upstream"
        assert results[1]["status"] == 200
    seen = [
        (m["params"]["protocol"], m["params"]["port"], m["params"]["decision"])
        for m in outer.notifications("network/policyDecision", processId="up")
    ]
    assert seen == [("https_connect", server.port, "allow")]


async def test_tcp_upstream_refusal_fails_the_socks_connection(start_server: StartServer) -> None:
    """When the mandatory upstream refuses the tunnel, the SOCKS5 client gets a failure reply
    (never a direct connection)."""
    from execserver.local.network.options import ExecutorNetworkOptions, parse_tcp_upstream
    from tests.wire.cases_network import NETCLIENT

    _, outer_url = await start_server()
    async with http_test_server() as server, await WireClient.connect(outer_url) as outer:
        await outer.initialize()
        upstream = await waiting_proxy(outer, "up", {"proxy": {**PROXY}})  # allows nothing
        network = ExecutorNetworkOptions(tcp_upstream=parse_tcp_upstream(upstream.split("//")[1]))
        _, url = await start_server(network=network)
        async with await WireClient.connect(url) as client:
            await client.initialize()
            launch = {"proxy": {**PROXY, "domains": {"127.0.0.1": "allow"}}}
            argv = [sys.executable, NETCLIENT, "socks", "127.0.0.1", str(server.port)]
            output = await run(client, "s", argv, networkProxy=launch)
        assert json.loads(output)["result"]["reply"] == 5  # connection refused
        assert server.requests == []


async def test_linux_sandbox_transparent_tcp_refuses_managed_sandboxes(
    start_server: StartServer,
) -> None:
    """`serve --linux-sandbox-transparent-tcp`: a managed-sandbox launch would need transparent
    TCP, which this executor cannot give: refused as `proxy.transparentTcp` is. Launches without
    enforcement still run."""
    from execserver.local.network.options import ExecutorNetworkOptions

    _, url = await start_server(network=ExecutorNetworkOptions(transparent_tcp=True))
    network_only = {
        "permissions": {
            "type": "managed",
            "file_system": {"type": "unrestricted"},
            "network": "restricted",
        },
        "windowsSandboxLevel": "disabled",
    }
    launch = {"proxy": PROXY}
    async with await WireClient.connect(url) as client:
        await client.initialize()
        params = process_params(
            "m",
            ["/bin/true"],
            networkProxy=launch,
            sandbox=network_only,
            enforceManagedNetwork=True,
        )
        refused = await client.request("process/start", params)
        assert refused["error"] == {
            "code": -32602,
            "message": "transparent TCP is not supported by this executor "
            "(capability networkProxyTransparentTcp is false)",
        }
        assert await run(client, "p", ["/bin/echo", "ran"], networkProxy=launch) == "ran\n"
