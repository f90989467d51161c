"""Package-level invariants: the public API and the import layers of ARCHITECTURE.md."""

from __future__ import annotations

import ast
from pathlib import Path

import execserver

SRC = Path(execserver.__file__).parent

# Which of our packages each layer may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "protocol": set(),
    "observability": {"version"},
    "environment": {"protocol", "errors"},
    "local": {"environment", "protocol", "errors", "observability"},
    "transport": set(),
    "rpc": {"protocol", "transport", "errors", "observability"},
    "server": {"local", "environment", "protocol", "rpc", "transport", "errors", "observability"},
    "client": {"rpc", "transport", "protocol", "errors", "observability"},
    "remote": {"client", "environment", "protocol", "errors"},
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


def _imported_layers(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    layers = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "execserver" and len(parts) > 1:
                layers.add(parts[1])
    return layers


def test_package_layers_point_one_way() -> None:
    """No module imports a layer above it (protocol <- ... <- server)."""
    violations = []
    for layer, allowed in ALLOWED.items():
        for path in (SRC / layer).rglob("*.py"):
            for imported in _imported_layers(path) - allowed - {layer}:
                violations.append(f"{path.relative_to(SRC)} imports execserver.{imported}")
    assert violations == []


def test_package_errors_module_imports_only_protocol() -> None:
    """errors.py sits beside protocol: it may import protocol and nothing else of ours."""
    assert _imported_layers(SRC / "errors.py") <= {"protocol"}
