"""The fleet recipes (deploy/fleet: Docker Compose, deploy/k8s: Kubernetes) and docs/fleet.md,
checked as far as this machine can without a container engine or a cluster:

* every YAML file parses; every relay command line goes through the real CLI parser and the
  relay's own configuration checks (listen address, URLs, node id, token and secret files);
* the cross-references: node ids, advertised URLs, NATS URLs and routes, secret and config
  mounts, ports, probes on /readyz, Services and the PodDisruptionBudget selecting the pods,
  the NATS image new enough (>= 2.9.21);
* the tools: `nats-server -t` on nats.conf, `haproxy -c` on haproxy.cfg, the Kubernetes
  schemas (kubernetes-validate, strict), `kubectl kustomize`; and haproxy.cfg run in front of
  a fleet of bare processes (a node's path reaches that node, another node when it is down).

The bare-process fleet itself (failover, races) is tests/relay/test_fleet.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import kubernetes_validate
import pytest
import yaml

from execserver.cli import build_parser
from execserver.cli import relay as relay_cli
from execserver.relay import api
from execserver.relay.service import metrics as metrics_module
from execserver.relay.service.nats_state import atomic_replicated_cas
from tests.conftest import IN_CI, TIME
from tests.harness.fleet import relay_fleet
from tests.harness.haproxy import HAPROXY_CFG, haproxy_process, local_haproxy_config
from tests.harness.nats import nats_server_path
from tests.harness.ports import listen_port
from tests.harness.relay import ENVIRONMENT_ID, EXECUTOR_TOKEN, remote_executor
from tests.harness.relay_wire import RelayHarness
from tests.harness.servers import REPO_ROOT
from tests.server.test_file_system import uri

FLEET = REPO_ROOT / "deploy" / "fleet"
K8S = REPO_ROOT / "deploy" / "k8s"
DOCS = REPO_ROOT / "docs" / "fleet.md"
COMPOSE = FLEET / "compose.yaml"
NATS_CONF = FLEET / "nats.conf"
K8S_MANIFESTS = ("services.yaml", "statefulset.yaml", "pdb.yaml")
K8S_VERSIONS = ("1.29", kubernetes_validate.utils.latest_version())
"""The oldest Kubernetes release we claim, and the newest the schemas know."""
NAMESPACE = "execserver"
FILE_FLAGS = (
    "ticket_secret_file",
    "executor_token_file",
    "harness_token_file",
    "metrics_token_file",
    "scopes_file",
)
"""The relay's flags that name files (a fleet recipe must give all but the scopes)."""


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if IN_CI:
            pytest.fail(f"CI=true but {tool} is not installed (scripts/test.sh installs it)")
        pytest.skip(f"{tool} is not installed")
    return path


def _yaml_files() -> list[Path]:
    return sorted([*FLEET.glob("*.yaml"), *K8S.glob("*.yaml")])


def _load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


# --- the relay's command line ---------------------------------------------------------------


@dataclass
class RelayNode:
    """One relay command line as the relay itself reads it."""

    args: argparse.Namespace
    fleet: relay_cli.FleetSettings
    host: str
    port: int
    node_id: str
    public_url: str
    advertise_url: str


def parse_relay(argv: list[str], mounted: dict[str, Path]) -> RelayNode:
    """`argv` (after the image's `execserver`) through the real parser and the relay's own
    configuration checks; every file flag must name one of `mounted` (container path → a
    local file with the same role)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed why
        raise AssertionError(f"execserver rejects {argv}") from exc
    assert args.command == "relay", argv
    assert not args.allow_unauthenticated, "a fleet recipe must not open the relay to anyone"
    for flag in FILE_FLAGS:
        path = getattr(args, flag)
        if path is None and flag == "scopes_file":
            continue
        assert path is not None, f"--{flag.replace('_', '-')} missing"
        assert path in mounted, (
            f"--{flag.replace('_', '-')} {path}: not mounted ({sorted(mounted)})"
        )
        setattr(args, flag, str(mounted[path]))
    host, port, config, snapshot = relay_cli.build_config(args)
    fleet = relay_cli.build_fleet(args)
    assert fleet is not None, "not a fleet node: no --nats"
    assert snapshot is None
    assert config.metrics, "--metrics missing"
    assert config.public_url is not None and config.advertise_url is not None
    assert args.node_id is not None, "--node-id missing (a random id changes at every start)"
    return RelayNode(
        args, fleet, host, port, config.node_id, config.public_url, config.advertise_url
    )


@pytest.fixture
def secret_files(tmp_path: Path) -> dict[str, Path]:
    """The four files of a fleet, made as docs/fleet.md says, by role."""
    made = {"ticket-secret": secrets.token_hex(32)} | {
        f"{role}-tokens": secrets.token_urlsafe(32) for role in ("executor", "harness", "metrics")
    }
    files = {}
    for name, content in made.items():
        path = tmp_path / "secrets" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(content + "\n")
        files[name] = path
    return files


def test_every_yaml_file_parses() -> None:
    files = _yaml_files()
    assert {path.name for path in files} >= {
        "compose.yaml",
        "kustomization.yaml",
        "nats-values.yaml",
        *K8S_MANIFESTS,
    }
    for path in files:
        assert _load_all(path), f"{path} holds no document"


# --- Docker Compose ---------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${NAME}` / `${NAME:-default}` (default when unset or empty)."""
    result = _VARIABLE.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)
    assert "$" not in result.replace("$$", ""), "a variable form this check does not know"
    return result.replace("$$", "$")


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    document = yaml.safe_load(interpolate(COMPOSE.read_text(), env or {}))
    assert isinstance(document, dict)
    return document


def _services(document: dict[str, Any], prefix: str) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = document["services"]
    return {name: s for name, s in sorted(services.items()) if name.startswith(prefix)}


def _compose_mounts(
    document: dict[str, Any], service: dict[str, Any], files: dict[str, Path]
) -> dict[str, Path]:
    """Container path → local stand-in of every secret `service` mounts."""
    mounts = {}
    for entry in service.get("secrets", []):
        name = entry if isinstance(entry, str) else entry["source"]
        target = f"/run/secrets/{name}" if isinstance(entry, str) else entry["target"]
        source = document["secrets"][name]["file"]
        assert source.startswith("./secrets/"), source
        mounts[target] = files[source.removeprefix("./secrets/")]
    return mounts


def _nats_services(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return _services(document, "nats-")


def _relay_nodes(document: dict[str, Any], files: dict[str, Path]) -> dict[str, RelayNode]:
    return {
        name: parse_relay(service["command"], _compose_mounts(document, service, files))
        for name, service in _services(document, "relay-").items()
    }


def _image_version(image: str) -> str:
    """`nats:2.15-alpine` → `2.15`."""
    return image.rpartition(":")[2].split("-", 1)[0]


@pytest.mark.parametrize("public", [None, "wss://relay.example.com"])
def test_compose_relay_nodes_run_with_the_real_flags(
    secret_files: dict[str, Path], public: str | None
) -> None:
    """Each relay service's command is accepted by execserver as a fleet node: its own node id
    (the service name) and advertised URL (the public URL + /node/<id>, the balancer's route),
    the same public URL, ticket secret and NATS servers as the others."""
    document = compose({"FLEET_PUBLIC_URL": public} if public else {})
    nodes = _relay_nodes(document, secret_files)
    assert sorted(nodes) == ["relay-1", "relay-2", "relay-3"]
    expected_public = public or "ws://127.0.0.1:8780"
    nats = [f"nats://{name}:4222" for name in _nats_services(document)]
    for name, node in nodes.items():
        assert node.node_id == name
        assert node.public_url == expected_public
        assert node.advertise_url == f"{expected_public}/node/{name}"
        assert node.fleet.servers == nats
        assert node.fleet.replicas == 3 == len(nats)
        assert (node.host, node.port) == ("0.0.0.0", 8780)
        assert node.args.ticket_secret_file == str(secret_files["ticket-secret"])


def test_compose_references_and_healthchecks() -> None:
    document = compose()
    services = document["services"]
    assert set(services) == {
        "nats-1", "nats-2", "nats-3", "relay-1", "relay-2", "relay-3", "balancer",
    }  # fmt: skip
    for name, service in services.items():
        for kind in ("secrets", "configs"):
            for entry in service.get(kind, []):
                source = entry if isinstance(entry, str) else entry["source"]
                assert source in document.get(kind, {}), f"{name}: {kind} {source} undefined"
        for volume in service.get("volumes", []):
            assert volume.split(":", 1)[0] in document["volumes"], f"{name}: volume {volume}"
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown {dependency}"
    for kind in ("configs", "secrets"):
        for name, entry in document[kind].items():
            path = FLEET / entry["file"]
            if kind == "configs":
                assert path.is_file(), f"{kind} {name}: {path} missing"
            else:  # made by the operator; the directory is there, its files are ignored by git
                assert (path.parent / ".gitignore").is_file(), path.parent
    for service in _services(document, "relay-").values():
        assert service["image"] == "execserver:latest"
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"], test
        assert "'http://127.0.0.1:8780/readyz'" in test[3], test
        assert set(service["depends_on"]) == set(_nats_services(document))
        assert all(d["condition"] == "service_healthy" for d in service["depends_on"].values())
    for service in _nats_services(document).values():
        assert service["healthcheck"]["test"][-1] == "http://127.0.0.1:8222/healthz"
        assert atomic_replicated_cas(_image_version(service["image"])), service["image"]
        assert service["image"].startswith("nats:")
    balancer = services["balancer"]
    assert balancer["ports"] == ["8780:8780"]
    assert balancer["configs"] == [
        {"source": "haproxy_cfg", "target": "/usr/local/etc/haproxy/haproxy.cfg"}
    ]


def _nats_routes() -> list[str]:
    block = re.search(r"routes:\s*\[(.*?)\]", NATS_CONF.read_text(), re.DOTALL)
    assert block is not None
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_compose_nats_servers_are_one_cluster_and_their_config_is_valid(tmp_path: Path) -> None:
    """Every NATS service runs nats.conf (as mounted) under its own name; the routes name the
    three services; `nats-server -t` accepts the file with each service's flags."""
    document = compose()
    servers = _nats_services(document)
    assert _nats_routes() == [f"nats://{name}:6222" for name in servers]
    conf = NATS_CONF.read_text()
    for needle in ("port: 4222", "http_port: 8222", "jetstream {", "cluster {", "port: 6222"):
        assert needle in conf, needle
    binary = nats_server_path()
    for name, service in servers.items():
        mounts = {c["target"]: c["source"] for c in service["configs"]}
        command = list(service["command"])
        config_at = command.index("--config") + 1
        assert document["configs"][mounts[command[config_at]]]["file"] == "./nats.conf"
        command[config_at] = str(NATS_CONF)
        assert command[command.index("--name") + 1] == name
        result = subprocess.run(
            [binary, "-t", *command], capture_output=True, text=True, timeout=30 * TIME
        )
        assert result.returncode == 0, result.stderr
        assert "is valid" in result.stdout + result.stderr


def _haproxy_sections() -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for raw in HAPROXY_CFG.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip() if not raw.lstrip().startswith("log-format") else raw
        if not line.strip():
            continue
        if not line[0].isspace():
            current = sections.setdefault(line.strip(), [])
        else:
            current.append(line.strip())
    return sections


def test_haproxy_config_matches_the_relay_nodes(secret_files: dict[str, Path]) -> None:
    """The balancer listens on the published port, health-checks /readyz on every node's
    listening port, and routes /node/<id>/ to that node (others as backups) for every node
    id the nodes advertise."""
    document = compose()
    nodes = _relay_nodes(document, secret_files)
    sections = _haproxy_sections()
    assert sections["frontend relay"][0] == "bind :8780"
    relays = sections["backend relays"]
    assert "option httpchk GET /readyz" in relays
    # A node paused by a full garbage collection (over 1 s, docs/SCALING.md) is not down.
    assert "timeout check 5s" in sections["defaults"]
    assert sorted(line for line in relays if line.startswith("server ")) == [
        f"server {name} {name}:{node.port} check" for name, node in nodes.items()
    ]
    for name, node in nodes.items():
        path = urlsplit(node.advertise_url).path + "/"
        assert f"use_backend node-{name} if {{ path_beg {path} }}" in sections["frontend relay"]
        backend = sections[f"backend node-{name}"]
        assert backend[0] == f"http-request replace-path ^{path[:-1]}(/.*)$ \\1"
        servers = backend[1:]
        assert servers[0] == f"server {name} {name}:{node.port} track relays/{name}"
        assert sorted(servers[1:]) == [
            f"server {other} {other}:{nodes[other].port} track relays/{other} backup"
            for other in nodes
            if other != name
        ]


def test_haproxy_accepts_the_config() -> None:
    """`haproxy -c`: valid; the only warnings are the compose host names it cannot resolve
    here (it starts them unresolved and asks Docker's DNS at run time)."""
    haproxy = _require("haproxy")
    result = subprocess.run(
        [haproxy, "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, timeout=30 * TIME
    )
    assert result.returncode == 0, result.stderr
    for line in (result.stdout + result.stderr).splitlines():
        if "[WARNING]" in line:
            assert re.search(r"could not resolve address 'relay-\d'", line), line
        assert "[ALERT]" not in line, line


async def _status(session: aiohttp.ClientSession, url: str, token: str | None = None) -> int:
    headers = api.bearer(token) if token else {}
    with contextlib.suppress(aiohttp.ClientError):
        async with session.get(url, headers=headers) as response:
            await response.read()
            return response.status
    return 0


async def _until_status(session: aiohttp.ClientSession, url: str, status: int) -> None:
    async with asyncio.timeout(30 * TIME):
        while True:
            if await _status(session, url) == status:
                return
            await asyncio.sleep(0.05)  # a poll with a deadline


async def test_haproxy_config_in_front_of_a_fleet(tmp_path: Path) -> None:
    """haproxy.cfg in front of three bare-process nodes that advertise `<balancer>/node/<id>`,
    everything through the balancer: the executor registers and dials, the harness's bundle
    names its executor's node, and its stream stays there (nothing crosses NATS); a node's
    path reaches another node while it is down; no ticket in the balancer's log."""
    haproxy = _require("haproxy")
    ha_port = listen_port()
    base = f"ws://127.0.0.1:{ha_port}"
    registry = f"http://127.0.0.1:{ha_port}"
    async with relay_fleet(
        tmp_path / "fleet", advertise_base=base, extra=["--public-url", base]
    ) as fleet:
        config = tmp_path / "haproxy.cfg"
        nodes = [(fleet.node_id(index), port) for index, port in enumerate(fleet.ports)]
        config.write_text(local_haproxy_config(ha_port, nodes))
        log = tmp_path / "haproxy.log"
        async with (
            haproxy_process(haproxy, config, log, stop_timeout_s=10 * TIME),
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60 * TIME)) as session,
        ):
            await _until_status(session, f"{registry}/readyz", 200)
            async with remote_executor("ours", registry, tmp_path / "executor"):
                holder = await fleet.holder()
                node = fleet.node_id(holder)
                metrics = f"{registry}/node/{node}/metrics"
                assert await _status(session, metrics, EXECUTOR_TOKEN) == 200
                harness = RelayHarness(session, registry, ENVIRONMENT_ID)
                bundle = await harness.bundle()
                assert bundle.url.startswith(f"{base}/node/{node}/relay/harness?ticket="), bundle
                stream = await harness.connect(bundle=bundle)
                assert "result" in await stream.initialize()
                assert await fleet.gauge(holder, "harness_sockets") == 1
                for index in fleet.live():
                    assert await fleet.gauge(index, "fleet_remote_executors") == 0
                (tmp_path / "hello").write_text("hello")
                read = await stream.call("fs/readFile", {"path": uri(tmp_path / "hello")})
                assert read["dataBase64"] == "aGVsbG8="
                await stream.close()

                down = (holder + 1) % len(fleet.ports)
                await fleet.kill_node(down)
                await _until_status(session, f"{registry}/node/{fleet.node_id(down)}/readyz", 200)
                fresh = await harness.bundle()
                rerouted = fresh.url.replace(f"/node/{node}/", f"/node/{fleet.node_id(down)}/")
                assert rerouted != fresh.url
                stream = await harness.connect(
                    bundle=api.ConnectResponse(**{**_fields(fresh), "url": rerouted})
                )
                assert "result" in await stream.initialize()
                await stream.close()
    text = log.read_text()
    assert f"/node/{node}/relay/harness" in text, text[-2000:]
    assert "ticket" not in text, "the balancer logged a ticket"


def _fields(bundle: api.ConnectResponse) -> dict[str, object]:
    return {name: getattr(bundle, name) for name in bundle.__struct_fields__}


# --- Kubernetes -------------------------------------------------------------------------------


def k8s_objects() -> list[dict[str, Any]]:
    return [doc for name in K8S_MANIFESTS for doc in _load_all(K8S / name)]


def _one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, (kind, name, [o["metadata"]["name"] for o in found])
    return found[0]


def kustomization() -> dict[str, Any]:
    document = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert isinstance(document, dict)
    return document


def _generated(kind: str) -> dict[str, Any]:
    generators: list[dict[str, Any]] = kustomization()[kind]
    assert len(generators) == 1
    return generators[0]


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(NAME)` in container args, every name required to be defined."""

    def sub(match: re.Match[str]) -> str:
        assert match.group(1) in env, f"$({match.group(1)}) is not in the container's env"
        return env[match.group(1)]

    return re.sub(r"\$\((\w+)\)", sub, value)


def _container_env(container: dict[str, Any], pod: str) -> dict[str, str]:
    literals = dict(item.split("=", 1) for item in _generated("configMapGenerator")["literals"])
    config_map = _generated("configMapGenerator")["name"]
    env = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            field = source["fieldRef"]["fieldPath"]
            env[item["name"]] = {"metadata.name": pod, "metadata.namespace": NAMESPACE}[field]
        else:
            ref = source["configMapKeyRef"]
            assert ref["name"] == config_map, ref
            env[item["name"]] = literals[ref["key"]]
    return env


def _secret_mounts(
    statefulset: dict[str, Any], container: dict[str, Any], files: dict[str, Path]
) -> dict[str, Path]:
    """Container path → local stand-in of every key of the generated Secret."""
    generator = _generated("secretGenerator")
    keys = dict(item.split("=", 1) for item in generator["files"])
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    mounts = {}
    for mount in container["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        assert secret["secretName"] == generator["name"]
        assert mount["readOnly"] is True
        for key, source in keys.items():
            assert source == f"secrets/{key}", source
            mounts[f"{mount['mountPath']}/{key}"] = files[key]
    return mounts


def _helm_release() -> str:
    """The release name of the helm command in nats-values.yaml, the same in docs/fleet.md."""
    pattern = (
        r"helm upgrade --install (\S+) nats/nats --namespace \S+ -f deploy/k8s/nats-values.yaml"
    )
    values = re.search(pattern, (K8S / "nats-values.yaml").read_text())
    docs = re.search(pattern, DOCS.read_text())
    assert values is not None and docs is not None
    assert values.group(1) == docs.group(1)
    return values.group(1)


def test_k8s_objects_are_well_formed_and_pass_the_schemas() -> None:
    objects = k8s_objects()
    assert sorted(o["kind"] for o in objects) == [
        "PodDisruptionBudget",
        "Service",
        "Service",
        "StatefulSet",
    ]
    for obj in objects:
        assert obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"], obj
        assert obj["metadata"]["labels"]["app.kubernetes.io/name"] == "execserver-relay"
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    assert kustomization()["resources"] == list(K8S_MANIFESTS)


def test_k8s_relay_pods_run_with_the_real_flags(secret_files: dict[str, Path]) -> None:
    """Each pod's arguments (env expanded as the kubelet does) are accepted by execserver as
    a fleet node: the pod name as node id, its per-pod DNS name under the headless Service as
    advertised URL, the public URL of the ConfigMap, the NATS chart's pods as servers."""
    objects = k8s_objects()
    statefulset = _one(objects, "StatefulSet")
    headless = _one(objects, "Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "execserver:latest" and "command" not in container
    assert kustomization()["images"][0]["name"] == "execserver"
    mounts = _secret_mounts(statefulset, container, secret_files)
    values = yaml.safe_load((K8S / "nats-values.yaml").read_text())
    release, nats_replicas = _helm_release(), values["config"]["cluster"]["replicas"]
    nats = [f"nats://{release}-{i}.{release}-headless:4222" for i in range(nats_replicas)]
    name = statefulset["metadata"]["name"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    public = dict(item.split("=", 1) for item in _generated("configMapGenerator")["literals"])
    for ordinal in range(statefulset["spec"]["replicas"]):
        pod = f"{name}-{ordinal}"
        env = _container_env(container, pod)
        node = parse_relay([_expand(arg, env) for arg in container["args"]], mounts)
        assert node.node_id == pod
        service = headless["metadata"]["name"]
        assert node.advertise_url == f"ws://{pod}.{service}.{NAMESPACE}.svc:{node.port}"
        assert node.public_url == public["public-url"]
        assert node.fleet.servers == nats
        assert node.fleet.replicas == nats_replicas == 3
        assert (node.host, node.port) == ("0.0.0.0", ports["relay"])


def test_k8s_probes_security_and_selectors() -> None:
    objects = k8s_objects()
    statefulset = _one(objects, "StatefulSet")
    template = statefulset["spec"]["template"]
    labels = template["metadata"]["labels"]
    selector = statefulset["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    (container,) = template["spec"]["containers"]
    port_names = {p["name"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert (check["path"], check["port"]) == ("/readyz", "relay"), probe
        assert check["port"] in port_names
    # A node paused by a full garbage collection (over 1 s, docs/SCALING.md) stays ready.
    assert container["readinessProbe"]["timeoutSeconds"] >= 5
    requests = container["resources"]["requests"]
    assert requests["cpu"] and requests["memory"]
    pod_security = template["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] != 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    for service in (o for o in objects if o["kind"] == "Service"):
        assert service["spec"]["selector"].items() <= labels.items()
        assert [p["targetPort"] for p in service["spec"]["ports"]] == ["relay"]
    assert _one(objects, "Service", "execserver-relay")["spec"]["type"] == "LoadBalancer"
    pdb = _one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1 < statefulset["spec"]["replicas"]


def test_nats_chart_values() -> None:
    """Three clustered servers with file-backed JetStream, an image new enough."""
    values = yaml.safe_load((K8S / "nats-values.yaml").read_text())
    assert values["config"]["cluster"] == {"enabled": True, "replicas": 3}
    jetstream = values["config"]["jetstream"]
    assert jetstream["enabled"] is True and jetstream["fileStore"]["enabled"] is True
    assert atomic_replicated_cas(_image_version(":" + values["container"]["image"]["tag"]))
    assert "helm repo add nats https://nats-io.github.io/k8s/helm/charts/" in DOCS.read_text()


def test_kustomize_builds_the_manifests(tmp_path: Path, secret_files: dict[str, Path]) -> None:
    """`kubectl kustomize` with the four secret files in place: the generated Secret and
    ConfigMap are the ones the StatefulSet names (hashed names rewritten), and every object
    passes the schemas."""
    kubectl = _require("kubectl")
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    for name, path in secret_files.items():
        shutil.copy(path, tree / "secrets" / name)
    result = subprocess.run(
        [kubectl, "kustomize", str(tree)], capture_output=True, text=True, timeout=60 * TIME
    )
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]
    secret = _one(objects, "Secret")
    config_map = _one(objects, "ConfigMap")
    assert set(secret["data"]) == set(secret_files)
    statefulset = _one(objects, "StatefulSet")
    volumes = statefulset["spec"]["template"]["spec"]["volumes"]
    assert secret["metadata"]["name"] in [v.get("secret", {}).get("secretName") for v in volumes]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    refs = [e["valueFrom"]["configMapKeyRef"]["name"] for e in container["env"] if _cm(e)]
    assert refs == [config_map["metadata"]["name"]]
    for obj in objects:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def _cm(env: dict[str, Any]) -> bool:
    return "configMapKeyRef" in env.get("valueFrom", {})


# --- docs/fleet.md ----------------------------------------------------------------------------


def _shell_commands(text: str) -> Iterator[list[str]]:
    """The commands of the ```sh blocks, continuation lines joined, comments dropped."""
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        for command in block.replace("\\\n", " ").splitlines():
            words = shlex.split(command, comments=True)
            if words:
                yield words


def test_docs_relay_commands_parse(secret_files: dict[str, Path]) -> None:
    """Every `execserver relay` command in docs/fleet.md is a valid fleet node."""
    commands = [w for w in _shell_commands(DOCS.read_text()) if w[:2] == ["execserver", "relay"]]
    assert commands
    for words in commands:
        mounted = {
            words[i + 1]: secret_files[Path(words[i + 1]).name]
            for i, word in enumerate(words)
            if word.endswith("-file")
        }
        node = parse_relay(words[1:], mounted)
        assert node.fleet.replicas == 3
        assert node.advertise_url != node.public_url


def test_docs_link_what_they_promise() -> None:
    text = DOCS.read_text()
    for needle in (
        "](SCALING.md)",
        "](relay.md)",
        "2.9.21",
        "deploy/fleet/compose.yaml",
        "kubectl apply -n execserver -k .",
        "docker build -f deploy/container/Dockerfile",
    ):
        assert needle in text, needle
    # The metrics table names metrics the relay has.
    section = text.split("## Metrics to watch", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) >= 8
    for row in rows:
        names = re.findall(r"`(\w+)`", row.split("|")[1].split("(")[0])
        assert names and all(name in metrics_module._HELP for name in names), row
