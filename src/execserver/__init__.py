"""execserver: a Python implementation of the Codex exec-server (JSON-RPC over WebSocket/stdio).

Public API: the server (`ExecServer`, `ServerConfig`), the error tree and `PathUri`.
"""

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
from execserver.version import __version__

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
