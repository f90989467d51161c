"""Differential wire cases for the executor-local managed proxy (`process/start.networkProxy`,
docs/protocol.md, Managed network).

The proxied process is `tests/harness/netclient.py`: it asks the proxy for connections (plain
HTTP, CONNECT, SOCKS5) to a scripted HTTP server on 127.0.0.1 or to names, and prints one JSON
line per answer (statuses, the proxy's error header, JSON bodies decoded, SOCKS reply codes).
The observation is those lines, the `network/policyDecision` notifications in order, and the
`network/policyRequest` requests the client was asked (answered by the case as scripted).

Masked, because they vary from run to run: the test server's port and the proxy's ports
(`<port>`), the program's own address in `client` (`127.0.0.1:<client>`), timestamps. Names
under `.test` never resolve, which the proxy treats as local (both fail closed); no case
needs the internet.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.harness.differential import Case, CaseContext
from tests.harness.httpserver import HttpTestServer, http_test_server, respond, unused_port
from tests.harness.udpecho import UdpEcho, udp_echo
from tests.harness.wire import Json, WireClient
from tests.wire.cases_core import start_params, summarize

CASES: dict[str, Case] = {}

NETCLIENT = str(Path(__file__).resolve().parents[1] / "harness" / "netclient.py")
PYTHON = sys.executable
PROXY: Json = {
    "enabled": True,
    "enableSocks5": True,
    "enableSocks5Udp": False,
    "allowUpstreamProxy": False,
    "dangerouslyAllowAllUnixSockets": False,
    "mode": "full",
    "allowLocalBinding": False,
}
_PROCESS_TIMEOUT = 60.0
_CLIENT = re.compile(r"127\.0\.0\.1:\d+")
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


def proxy(**members: Any) -> Json:
    return {**PROXY, **members}


def _routes(server: HttpTestServer) -> None:
    for path in ("/x", "/tunnel", "/socks", "/y"):
        body = b"hello " + path[1:].encode()
        server.route(path, respond(200, [("Content-Type", "text/plain")], body))


def decision(message: Json) -> Json:
    """A `network/policyDecision`'s params with the timestamp checked and masked."""
    params = dict(message["params"])
    assert _TIMESTAMP.match(params["timestamp"]), params["timestamp"]
    params["timestamp"] = "<timestamp>"
    params["client"] = _CLIENT.sub("127.0.0.1:<client>", params["client"])
    return params


async def run_netclient(
    client: WireClient,
    ctx: CaseContext,
    process_id: str,
    ops: list[str],
    launch: Json,
    *,
    answers: Sequence[Json | None] = (),
    **extra: Any,
) -> Json:
    """Run netclient with `ops` under the managed proxy `launch`; answer the first
    `network/policyRequest`s with `answers` (None: leave it unanswered). Returns the start
    answer, the printed lines, the exit, the decisions and the requests asked."""
    params = start_params(ctx, process_id, [PYTHON, NETCLIENT, *ops], networkProxy=launch, **extra)
    response = await client.request("process/start", params, timeout=_PROCESS_TIMEOUT)
    if "error" in response:
        return {"start": {k: v for k, v in response.items() if k != "id"}}
    asked = []
    for answer in answers:
        request = await client.wait_for(
            lambda m: (
                m.get("method") == "network/policyRequest"
                and m["params"]["processId"] == process_id
                and m not in asked
            ),
            timeout=_PROCESS_TIMEOUT,
        )
        asked.append(request)
        if answer is not None:
            await client.send({"id": request["id"], **answer})
    events = await client.process_events(process_id, timeout=_PROCESS_TIMEOUT)
    summary = summarize(events)
    lines = [json.loads(line) for line in "".join(o[1] for o in summary["output"]).splitlines()]
    return {
        "start": {k: v for k, v in response.items() if k != "id"},
        "results": lines,
        "exited": summary["exited"],
        "decisions": [
            decision(m)
            for m in client.notifications("network/policyDecision", processId=process_id)
        ],
        "requests": [{k: v for k, v in m.items() if k != "id"} for m in asked],
        "request_ids_are_integers": all(isinstance(m["id"], int) for m in asked),
    }


def _masked(server: HttpTestServer, value: Any, *ports: int) -> Any:
    """The test server's port (and `ports`) masked, in strings and in `port` members."""
    numbers = {server.port, *ports}

    def walk(item: Any) -> Any:
        if isinstance(item, dict):
            return {
                k: "<port>" if k == "port" and v in numbers else walk(v) for k, v in item.items()
            }
        if isinstance(item, list):
            return [walk(v) for v in item]
        if isinstance(item, str) and item.isdigit() and int(item) in numbers:
            return "<port>"
        return item

    return server.mask(walk(value), ports=ports)


# -- environment ---------------------------------------------------------------------------


def _env_shapes(output: str) -> Json:
    """`env` output -> {name: value with ports masked}, plus how the ports relate."""
    env = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    ports = {name: m.group(1) for name, value in env.items() if (m := re.search(r":(\d+)$", value))}
    http = ports.get("HTTP_PROXY")
    return {
        "env": {name: re.sub(r":\d+$", ":<port>", value) for name, value in sorted(env.items())},
        "http_ports_agree": all(ports[n] == http for n in ports if env[n].startswith("http://")),
        "all_proxy_is_http_port": ports.get("ALL_PROXY") == http,
    }


@case
async def network_proxy_child_environment(ctx: CaseContext) -> Any:
    """The variables a proxied child gets (names and value shapes), with SOCKS5 on and off,
    local binding on and off, and over the request's own proxy variables."""
    client = await ctx.client()
    variants: list[tuple[Json, Json]] = [
        ({"proxy": proxy()}, {}),
        ({"proxy": proxy(enableSocks5=False, allowLocalBinding=True)}, {}),
        ({"proxy": proxy(mode="limited")}, {"HTTP_PROXY": "http://x:1", "no_proxy": "a", "K": "v"}),
    ]
    out = []
    for index, (launch, env) in enumerate(variants):
        response = await client.request(
            "process/start",
            start_params(ctx, f"e{index}", ["/usr/bin/env"], env=env, networkProxy=launch),
        )
        events = await client.process_events(f"e{index}")
        output = "".join(o[1] for o in summarize(events)["output"])
        out.append([{k: v for k, v in response.items() if k != "id"}, _env_shapes(output)])
    return out


_CA_BUNDLE = re.compile(r"^.*/proxy/ca-bundle-[0-9a-f]{64}\.pem$")


@case
async def network_proxy_credential_masking_environment(ctx: CaseContext) -> Any:
    """With `credentialMasking`, the child also gets the CA bundle (`$CODEX_HOME/proxy/
    ca-bundle-<sha256>.pem`) in the same 13 variables, and the broker's markers; variables no
    provider brokers (and custom providers' variables whose values do not match) are left as
    they were. Run as `bash -c`, the form the reference masks (deliberate difference
    `credential_masking_masks` for the others)."""
    client = await ctx.client()
    providers = {
        "v": {"env": ["VENDOR_KEY"], "patterns": ["v_[a-z]{8}"], "url_prefixes": ["https://a.test"]}
    }
    variants: list[tuple[Json, Json]] = [
        ({"proxy": proxy(credentialMasking=True)}, {"K": "v"}),
        (
            {"proxy": proxy(credentialMasking=True, credentialProviders=providers)},
            {"VENDOR_KEY": "no match", "GH_TOKEN": ""},
        ),
        ({"proxy": proxy(credentialMasking=False, credentialProviders=providers)}, {}),
    ]
    out = []
    for index, (launch, env) in enumerate(variants):
        response = await client.request(
            "process/start",
            start_params(
                ctx, f"m{index}", ["/bin/bash", "-c", "env"], env=env, networkProxy=launch
            ),
        )
        events = await client.process_events(f"m{index}")
        output = "".join(o[1] for o in summarize(events)["output"])
        shapes = _env_shapes(output)
        bundles = {v for v in shapes["env"].values() if _CA_BUNDLE.match(v)}
        shapes["env"] = {
            k: "<bundle>" if _CA_BUNDLE.match(v) else v for k, v in shapes["env"].items()
        }
        out.append([{k: v for k, v in response.items() if k != "id"}, shapes, len(bundles)])
    return out


_BUILTIN_DUMMY = re.compile(
    r"^((?:ghp_|gho_|ghu_|ghs_|ghr_|github_pat_|sk-(?:[a-z]+-)?)masked)[A-Za-z0-9]+$"
)
_SECRETS = {
    "GH_TOKEN": "ghp_Wire0123456789abcdefghijklmnopqrstuvw",
    "GITHUB_TOKEN": "short",
    "OPENAI_API_KEY": "sk-proj-" + "Ab3De6Gh9J" * 5 + "x",
    "GH_HOST": "ghe.example.test",
    "GH_ENTERPRISE_TOKEN": "github_pat_Enterprise0123456789abcdefghijklmnop",
    "VENDOR_TOKEN": "vendor_abcdefghijklmnopqrstuvwx",
    "VENDOR_OTHER": "no match",
}


def _dummy_shape(name: str, value: str) -> str:
    """A dummy as its shape: `<prefix>masked<length N>` for built-in secrets, `<vendor_ dummy
    of length N>` for the custom provider's; anything else as it is."""
    if value == _SECRETS.get(name):
        return value  # not masked
    if match := _BUILTIN_DUMMY.match(value):
        return f"{match.group(1)}<length {len(value)}>"
    if re.fullmatch(r"vendor_[a-z]{24}", value):
        return f"<vendor_ dummy of length {len(value)}>"
    return value


@case
async def network_proxy_credential_masking_bash(ctx: CaseContext) -> Any:
    """A `bash -c` command under credential masking (how the app-server runs non-login
    commands): built-in secrets (any value) and a custom provider's matching value become
    dummies of the reference's shape, the same one for the same secret in a later process;
    the broker's markers name them (`@alias:` entries too); a value not matching the provider's
    pattern stays."""
    client = await ctx.client()
    providers = {
        "vendor": {
            "env": ["VENDOR_TOKEN", "VENDOR_OTHER"],
            "patterns": ["vendor_[a-z]{24}"],
            "url_prefixes": ["https://api.vendor.test/v1"],
        }
    }
    launch = {"proxy": proxy(credentialMasking=True, credentialProviders=providers)}
    script = "env | grep -E '^(GH_|GITHUB_|OPENAI_|VENDOR_|CODEX_NETWORK_PROXY_(CRED|BROK))' | sort"
    out = []
    dummies = []
    for index in range(2):
        response = await client.request(
            "process/start",
            start_params(
                ctx, f"b{index}", ["/bin/bash", "-c", script], env=_SECRETS, networkProxy=launch
            ),
        )
        events = await client.process_events(f"b{index}")
        output = "".join(o[1] for o in summarize(events)["output"])
        env = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
        marker = json.loads(env.pop("CODEX_NETWORK_PROXY_BROKERED_CREDENTIALS", "null") or "null")
        dummies.append({k: v for k, v in env.items() if v != _SECRETS.get(k)})
        out.append(
            [
                {k: v for k, v in response.items() if k != "id"},
                {k: _dummy_shape(k, v) for k, v in env.items()},
                None
                if marker is None
                else [[k, _dummy_shape(k.removeprefix("@alias:"), v)] for k, v in marker],
                marker is not None
                and all(env.get(k.removeprefix("@alias:")) == v for k, v in marker),
            ]
        )
    out.append(dummies[0] == dummies[1])
    return out


# -- decisions -------------------------------------------------------------------------------


@case
async def network_proxy_domain_decisions(ctx: CaseContext) -> Any:
    """Allow and deny entries, wildcards, local and private addresses, names that do not
    resolve, CONNECT and SOCKS5, an unreachable destination; the 403 bodies and the audit."""
    client = await ctx.client()
    closed = unused_port()
    async with http_test_server() as server:
        _routes(server)
        port = server.port
        launch = {
            "proxy": proxy(
                domains={"127.0.0.1": "allow", "bad.test": "deny", "*.good.test": "allow"}
            )
        }
        ops = [
            "get", f"http://127.0.0.1:{port}/x",
            "get", "http://bad.test/",
            "get", "http://BAD.test./",
            "get", "http://a.good.test/",
            "get", "http://good.test/",
            "get", "http://example.com/",
            "get", f"http://localhost:{port}/x",
            "get", "http://10.1.2.3/",
            "get", f"http://127.0.0.1:{closed}/",
            "connect", f"127.0.0.1:{port}",
            "connect", "bad.test:443",
            "socks", "127.0.0.1", str(port),
            "socks", "example.com", "80",
            "socks", "127.0.0.1", str(closed),
        ]  # fmt: skip
        result = await run_netclient(client, ctx, "d", ops, launch)
        return _masked(server, result, closed)


@case
async def network_proxy_local_binding_allowed(ctx: CaseContext) -> Any:
    """With local binding allowed, local addresses are plain allowlist matters."""
    client = await ctx.client()
    async with http_test_server() as server:
        _routes(server)
        port = server.port
        launch = {"proxy": proxy(allowLocalBinding=True, domains={"localhost": "allow"})}
        ops = [
            "get", f"http://localhost:{port}/x",
            "get", f"http://127.0.0.1:{port}/x",
            "get", "http://10.1.2.3/",
            "socks", "localhost", str(port),
        ]  # fmt: skip
        return _masked(server, await run_netclient(client, ctx, "l", ops, launch))


@case
async def network_proxy_limited_mode(ctx: CaseContext) -> Any:
    """Limited mode: safe methods only; CONNECT needs interception, SOCKS5 is refused."""
    client = await ctx.client()
    async with http_test_server() as server:
        _routes(server)
        port = server.port
        launch = {"proxy": proxy(mode="limited", domains={"127.0.0.1": "allow"})}
        ops = [
            "get", f"http://127.0.0.1:{port}/x",
            "post", f"http://127.0.0.1:{port}/x",
            "connect", f"127.0.0.1:{port}",
            "socks", "127.0.0.1", str(port),
            "post", "http://bad.test/",
        ]  # fmt: skip
        return _masked(server, await run_netclient(client, ctx, "m", ops, launch))


@case
async def network_proxy_policy_requests(ctx: CaseContext) -> Any:
    """With `policyDecisionTimeoutMs`, hosts the allowlist misses (and allowed hosts matching
    `reviewDomains`) are put to the client; its answers as given, in order: allow, a deny with
    a reason, a deny without one, an unknown shape, an error object, allow (review), allow
    (SOCKS5). Denied and local hosts are never asked."""
    client = await ctx.client()
    async with http_test_server() as server:
        _routes(server)
        port = server.port
        launch = {
            "proxy": proxy(
                allowLocalBinding=True,
                domains={"bad.test": "deny", "10.9.8.7": "allow"},
                reviewDomains=["10.9.8.7"],
            ),
            "policyDecisionTimeoutMs": 30000,
        }
        allow = {"result": {"decision": {"type": "allow"}}}
        answers: list[Json | None] = [
            allow,
            {"result": {"decision": {"type": "deny", "reason": "not today"}}},
            {"result": {"decision": {"type": "deny"}}},
            {"result": {"decision": "allow"}},
            {"error": {"code": -32000, "message": "no"}},
            {"result": {"decision": {"type": "deny", "reason": "reviewed"}}},
            allow,
        ]
        ops = [
            "get", f"http://127.0.0.1:{port}/x",
            "get", f"http://127.0.0.1:{port}/y",
            "get", f"http://127.0.0.1:{port}/y",
            "get", f"http://127.0.0.1:{port}/y",
            "connect", f"127.0.0.1:{port}",
            "get", "http://10.9.8.7/",
            "get", "http://bad.test/",
            "socks", "127.0.0.1", str(port),
        ]  # fmt: skip
        return _masked(server, await run_netclient(client, ctx, "q", ops, launch, answers=answers))


@case
async def network_proxy_policy_request_unanswered(ctx: CaseContext) -> Any:
    """A question left unanswered is denied once the timeout (plus the executor's grace) has
    passed; a late answer afterwards does not upset the connection."""
    client = await ctx.client()
    async with http_test_server() as server:
        _routes(server)
        launch = {
            "proxy": proxy(allowLocalBinding=True),
            "policyDecisionTimeoutMs": 100,
        }
        ops = ["get", f"http://127.0.0.1:{server.port}/x"]
        result = await run_netclient(client, ctx, "u", ops, launch, answers=[None])
        asked = client.notifications("network/policyRequest")
        await client.send({"id": asked[-1]["id"], "result": {"decision": {"type": "allow"}}})
        alive = await client.request("environment/status")
        return [_masked(server, result), {k: v for k, v in alive.items() if k != "id"}]


@case
async def network_proxy_config_errors(ctx: CaseContext) -> Any:
    """Lists the proxy refuses to enforce: a global wildcard in the deny list."""
    client = await ctx.client()
    out = []
    for index, domains in enumerate([{"*": "deny"}, {"*": "allow", "**.x.test": "deny"}]):
        params = start_params(
            ctx, f"c{index}", ["/bin/true"], networkProxy={"proxy": proxy(domains=domains)}
        )
        response = await client.request("process/start", params)
        if "result" in response:
            await client.process_events(f"c{index}")
        out.append({k: v for k, v in response.items() if k != "id"})
    return out


# -- SOCKS5 UDP ----------------------------------------------------------------------------


def mask_udp(echo: UdpEcho, value: Any) -> Any:
    """The destination's port masked (`port` members, digit strings, `:PORT` in strings)."""
    port = echo.port
    pattern = re.compile(rf"(?<=:){port}(?![0-9])")

    def walk(item: Any) -> Any:
        if isinstance(item, dict):
            return {k: "<port>" if k == "port" and v == port else walk(v) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v) for v in item]
        if isinstance(item, str):
            return "<port>" if item == str(port) else pattern.sub("<port>", item)
        return item

    return walk(value)


async def udp_run(
    client: WireClient,
    ctx: CaseContext,
    echo: UdpEcho,
    process_id: str,
    ops: list[str],
    *,
    launch: Json,
    **extra: Any,
) -> Json:
    """`run_netclient` plus what reached the destination first-hand (echoes coming back are
    left out, with the answers the relay delivered: where answers go differs on purpose,
    docs/protocol.md `network_proxy_socks5_udp_answers_bounce`)."""
    result = await run_netclient(client, ctx, process_id, ops, launch, **extra)
    for line in result.get("results", []):
        if isinstance(line["result"], dict):
            line["result"].pop("answers", None)
    result["destination"] = [item for item in echo.received if not item[1].startswith("echo ")]
    echo.received.clear()
    return mask_udp(echo, result)


@case
async def network_proxy_socks5_udp(ctx: CaseContext) -> Any:
    """SOCKS5 UDP ASSOCIATE with `enableSocks5Udp`, to a UDP server the test runs on 127.0.0.1
    and 127.0.0.2: the reply (`0.0.0.0:PORT`); an allowed datagram reaches the destination and
    its answer is checked too (two decisions); fragments and names are dropped unseen; a denied
    destination, and any datagram in limited mode, is refused and ends the association; a
    request naming 0.0.0.0:0 relays nothing, one naming a name is answered 08; an allowlist
    miss is put to the client, for the datagram and for its answer; without `enableSocks5Udp`
    the reply is 07."""
    client = await ctx.client()
    async with udp_echo() as echo:
        port = str(echo.port)
        allowed = proxy(enableSocks5Udp=True, domains={"127.0.0.1": "allow"})
        runs: list[tuple[str, Json]] = [
            ("frag1:127.0.0.1,name:127.0.0.1,name:localhost,127.0.0.1", allowed),
            ("127.0.0.2,127.0.0.1", allowed),
            ("127.0.0.1", {**allowed, "mode": "limited"}),
            ("127.0.0.2", proxy(enableSocks5Udp=True, domains={"127.0.0.2": "deny"})),
        ]
        out = []
        for index, (plan, config) in enumerate(runs):
            ops = ["socks-udp-relay", "bound", port, plan]
            out.append(await udp_run(client, ctx, echo, f"u{index}", ops, launch={"proxy": config}))
        asking = {
            "proxy": proxy(enableSocks5Udp=True, allowLocalBinding=True),
            "policyDecisionTimeoutMs": 30000,
        }
        allow: Json = {"result": {"decision": {"type": "allow"}}}
        ops = ["socks-udp-relay", "bound", port, "127.0.0.1"]
        answers: list[Json | None] = [allow, allow]
        out.append(await udp_run(client, ctx, echo, "ask", ops, launch=asking, answers=answers))
        ops = ["socks-udp-relay", "any", port, "127.0.0.1", "socks-udp", "socks-udp-named"]
        out.append(await udp_run(client, ctx, echo, "any", ops, launch={"proxy": allowed}))
        off = {"proxy": proxy()}
        out.append(await udp_run(client, ctx, echo, "off", ["socks-udp"], launch=off))
        return out


# -- managed sandboxes ---------------------------------------------------------------------


_NO_WINDOWS: Json = {"windowsSandboxLevel": "disabled"}


def _sandbox(ctx: CaseContext, network: str, *, workspace: bool) -> Json:
    if not workspace:
        file_system: Json = {"type": "unrestricted"}
    else:
        entries = [
            {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"},
            {"path": {"type": "special", "value": {"kind": "project_roots"}}, "access": "write"},
        ]
        file_system = {"type": "restricted", "entries": entries}
    return {
        "permissions": {"type": "managed", "file_system": file_system, "network": network},
        "workspaceRoots": [ctx.uri("ws")],
        "windowsSandboxLevel": "disabled",
    }


@case
async def network_proxy_managed_sandbox_reachability(ctx: CaseContext) -> Any:
    """With a sandbox and `enforceManagedNetwork`, the program has a network namespace of its
    own where only the proxy's ports answer: other loopback ports are refused, new unix
    sockets are not allowed, binding loopback works, whatever the profile (disabled and external
    ones too). Without enforcement the profile decides (an enabled network reaches everything,
    a restricted one nothing)."""
    (ctx.workdir / "ws").mkdir(exist_ok=True)
    client = await ctx.client()
    async with http_test_server() as server:
        _routes(server)
        port = str(server.port)
        launch = {"proxy": proxy(domains={"127.0.0.1": "allow"})}
        ops = [
            "get", f"http://127.0.0.1:{port}/x",
            "socks", "127.0.0.1", port,
            "direct", "127.0.0.1", port,
            "unix",
            "bind",
        ]  # fmt: skip
        variants = [
            ("network_only", _sandbox(ctx, "restricted", workspace=False), True),
            ("network_enabled", _sandbox(ctx, "enabled", workspace=False), True),
            ("workspace", _sandbox(ctx, "enabled", workspace=True), True),
            ("enabled_not_enforced", _sandbox(ctx, "enabled", workspace=True), False),
            ("restricted_not_enforced", _sandbox(ctx, "restricted", workspace=False), False),
            ("disabled", {"permissions": {"type": "disabled"}, **_NO_WINDOWS}, True),
            (
                "external",
                {"permissions": {"type": "external", "network": "enabled"}, **_NO_WINDOWS},
                True,
            ),
        ]
        out = []
        for index, (label, sandbox, enforce) in enumerate(variants):
            result = await run_netclient(
                client,
                ctx,
                f"s{index}",
                ops,
                launch,
                sandbox=sandbox,
                enforceManagedNetwork=enforce,
                cwd=ctx.uri("ws"),
            )
            out.append([label, _masked(server, result)])
        return out
