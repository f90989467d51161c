"""execserver: a Python implementation of the Codex exec-server (JSON-RPC over WebSocket/stdio).

Public API: the server (`ExecServer`, `ServerConfig`), the error tree and `PathUri`.

The names are loaded on first use (PEP 562): `import execserver.cli` or the sandbox's fs
helper must not pay for importing the whole server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from execserver.version import __version__

if TYPE_CHECKING:
    from execserver.errors import (
        ConnectError,
        ConnectionClosed,
        Disconnected,
        ExecServerError,
        InternalError,
        InvalidParams,
        InvalidRequest,
        MethodNotFound,
        NotFound,
        ProtocolViolation,
        RpcError,
        SessionAttached,
        TransportError,
    )
    from execserver.protocol.pathuri import PathUri, PathUriError
    from execserver.server.app import ExecServer, ServerConfig

# Each public name and the module it comes from.
_EXPORTS = {
    **dict.fromkeys(
        (
            "ConnectError",
            "ConnectionClosed",
            "Disconnected",
            "ExecServerError",
            "InternalError",
            "InvalidParams",
            "InvalidRequest",
            "MethodNotFound",
            "NotFound",
            "ProtocolViolation",
            "RpcError",
            "SessionAttached",
            "TransportError",
        ),
        "execserver.errors",
    ),
    "PathUri": "execserver.protocol.pathuri",
    "PathUriError": "execserver.protocol.pathuri",
    "ExecServer": "execserver.server.app",
    "ServerConfig": "execserver.server.app",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'execserver' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
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
