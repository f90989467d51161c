"""Package-level invariants: the public API and the import layers of ARCHITECTURE.md."""

from __future__ import annotations

import ast
from pathlib import Path

import execserver

SRC = Path(execserver.__file__).parent

# Which of our packages each layer may import (besides itself and EVERYWHERE).
ALLOWED: dict[str, set[str]] = {
    "compat": set(),
    "protocol": set(),
    "observability": {"version"},
    "environment": {"protocol", "errors"},
    "local": {"environment", "protocol", "errors", "observability"},
    "transport": {"errors"},
    "rpc": {"protocol", "transport", "errors", "observability"},
    "server": {
        "local",
        "environment",
        "protocol",
        "rpc",
        "transport",
        "errors",
        "observability",
        "relay",
    },
    "client": {"rpc", "transport", "protocol", "errors", "observability", "relay"},
    "remote": {"client", "environment", "protocol", "errors", "relay"},
    # Relay mode: pure codecs, the relay service, and the links that carry message channels
    # (executor and harness side); the server and the client plug those channels in.
    "relay": {"transport", "protocol", "errors", "observability"},
}


def test_package_public_api_is_pinned() -> None:
    """`execserver.__all__` is exactly the documented public API."""
    assert sorted(execserver.__all__) == [
        "ConnectError",
        "ConnectionClosed",
        "Disconnected",
        "ExecServer",
        "ExecServerError",
        "InternalError",
        "InvalidParams",
        "InvalidRequest",
        "MethodNotFound",
        "NotFound",
        "PathUri",
        "PathUriError",
        "ProtocolViolation",
        "RpcError",
        "ServerConfig",
        "SessionAttached",
        "TransportError",
        "__version__",
    ]
    for name in execserver.__all__:
        assert hasattr(execserver, name), name


# The package's top level (`import execserver`, `from execserver import ExecServer`): it
# re-exports the server, so it sits above every layer.
TOP_LEVEL = "__init__"


def _imported_layers(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    layers = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "execserver":
                # `from execserver import local` names a layer; any other name comes from the
                # top level.
                names = [f"execserver.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] != "execserver":
                continue
            if len(parts) == 1 or not _is_module(parts[1]):
                layers.add(TOP_LEVEL)
            else:
                layers.add(parts[1])
    return layers


def _is_module(name: str) -> bool:
    return (SRC / name).is_dir() or (SRC / f"{name}.py").is_file()


# Bottom modules every layer may use: task ownership (stdlib only), the Rust-crate
# emulations (`compat`, which imports nothing of ours), the token-file checks shared by the
# server's --ws-token-file and the CLI's --token-file (`token_files`) and the owner-only atomic
# file writer they and the proxy's CA use (`private_file`, stdlib only), and which event loop
# runs (`event_loop`, stdlib only: the relay names it in its first log line).
EVERYWHERE = {"tasks", "compat", "token_files", "private_file", "event_loop"}


def test_package_layers_point_one_way() -> None:
    """No module imports a layer above it (protocol <- ... <- server)."""
    violations = []
    for layer, allowed in ALLOWED.items():
        for path in (SRC / layer).rglob("*.py"):
            for imported in _imported_layers(path) - allowed - EVERYWHERE - {layer}:
                violations.append(f"{path.relative_to(SRC)} imports execserver.{imported}")
    assert violations == []


def test_package_layer_check_sees_the_top_level(tmp_path: Path) -> None:
    """`import execserver` and `from execserver import X` count as importing the top level."""
    cases = {
        "import execserver\n": {TOP_LEVEL},
        "import execserver.protocol.base\n": {"protocol"},
        "from execserver import ExecServer\n": {TOP_LEVEL},
        "from execserver import protocol, errors\n": {"protocol", "errors"},
        "from execserver.compat import serde\n": {"compat"},
        "import os\nfrom collections import abc\n": set(),
    }
    for index, (source, expected) in enumerate(cases.items()):
        path = tmp_path / f"case{index}.py"
        path.write_text(source)
        assert _imported_layers(path) == expected, source


def test_package_compat_imports_nothing_of_ours() -> None:
    """compat (the Rust-crate emulations) is the bottom layer: it imports only itself."""
    for path in (SRC / "compat").rglob("*.py"):
        assert _imported_layers(path) <= {"compat"}, path.relative_to(SRC)


def test_package_tasks_module_imports_nothing_of_ours() -> None:
    """tasks.py, private_file.py, event_loop.py and token_files.py (which uses private_file)
    are below every layer."""
    assert _imported_layers(SRC / "tasks.py") == set()
    assert _imported_layers(SRC / "event_loop.py") == set()
    assert _imported_layers(SRC / "private_file.py") == set()
    assert _imported_layers(SRC / "token_files.py") <= {"private_file"}


def test_package_errors_module_imports_only_protocol() -> None:
    """errors.py sits beside protocol: it may import protocol and nothing else of ours."""
    assert _imported_layers(SRC / "errors.py") <= {"protocol"}
