"""The public exception tree and the one table that maps it to and from JSON-RPC errors.

```
ExecServerError                 base for everything we raise
├── TransportError
│   ├── ConnectError            could not connect / handshake failed      (retryable)
│   │   ├── AuthenticationFailed our credentials were refused (not retryable)
│   │   └── HandshakeRejected   the server refused the upgrade (HTTP status, body)
│   ├── ConnectionClosed        we closed it                               (not retryable)
│   ├── Disconnected            the peer or the network broke it           (retryable)
│   └── RecoveryFailed          the session could not be resumed after a break (final)
├── MessageTooLarge             a request bigger than the connection can carry (not sent)
├── ProtocolViolation           malformed JSON-RPC from the peer
└── RpcError(code, message)     a JSON-RPC error
    ├── InvalidRequest (-32600)  MethodNotFound (-32601)  InvalidParams (-32602)
    ├── InternalError (-32603)   NotFound (-32004, also a FileNotFoundError)
    ├── SessionAttached (-32010)
    └── domain errors of the capabilities (subclasses of the above, worded here):
        CopyRefused, HttpRequestInvalid, HttpRequestFailed, HttpBodyFailed, StartFailed,
        ConfigPathsInvalid, ConfigLoadFailed, CodexHomeInvalid, TooManyCapabilityRoots
```

Filesystem failures stay builtin `OSError`s inside the server; `io_error()` renders them the way
the reference (a Rust musl build) does: `<musl strerror text> (os error N)`.
"""

from __future__ import annotations

import contextlib
import errno as _errno
from collections.abc import Iterator
from typing import ClassVar

from execserver.protocol.pathuri import PathUriError

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
NOT_FOUND = -32004
SESSION_ATTACHED = -32010


class ExecServerError(Exception):
    """Base class of every exception execserver raises on purpose."""


class TransportError(ExecServerError):
    """The message transport failed."""


class ConnectError(TransportError):
    """Could not connect or complete the opening handshake (retryable)."""


class AuthenticationFailed(ConnectError):
    """Our credentials were refused (asking again with the same ones cannot succeed)."""


class HandshakeRejected(ConnectError):
    """The server answered the opening handshake with an HTTP error (`status`, `body`)."""

    def __init__(
        self, message: str, *, status: int, body: str = "", retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after_s = retry_after_s
        """The answer's `Retry-After`, in seconds (None: none, or not in seconds)."""


class ConnectionClosed(TransportError):
    """The local side closed the connection (not retryable)."""


class Disconnected(TransportError):
    """The peer or the network broke the connection (retryable)."""


class RecoveryFailed(TransportError):
    """The connection broke and the client could not resume its session (final)."""


class MessageTooLarge(ExecServerError, ValueError):
    """A request too large for the connection (e.g. a huge argv); it was not sent and the
    connection is unaffected."""


class ProtocolViolation(ExecServerError):
    """The peer sent something that is not valid JSON-RPC for this protocol."""


class RpcError(ExecServerError):
    """A JSON-RPC error: `code`, `message` and optional `data`, exactly as sent on the wire."""

    code: int = INTERNAL_ERROR
    default_code: ClassVar[int] = INTERNAL_ERROR

    def __init__(self, message: str, *, code: int | None = None, data: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = self.default_code if code is None else code
        self.data = data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, message={self.message!r})"


class InvalidRequest(RpcError):
    default_code = INVALID_REQUEST


class MethodNotFound(RpcError):
    default_code = METHOD_NOT_FOUND


class InvalidParams(RpcError):
    default_code = INVALID_PARAMS


class InternalError(RpcError):
    default_code = INTERNAL_ERROR


class NotFound(RpcError, FileNotFoundError):
    """-32004: a missing path or file handle. Also a `FileNotFoundError`, so callers of the
    filesystem capability can catch it the builtin way."""

    default_code = NOT_FOUND


class SessionAttached(RpcError):
    default_code = SESSION_ATTACHED


# -- domain errors of the capabilities ---------------------------------------------------------
#
# Raised by `local/` with what went wrong; the executor's wording (which names its wire methods)
# lives here, once, so local code never spells a wire method.

_COPY_REFUSALS = {
    "directory_without_recursive": (
        "fs/copy requires recursive: true when sourcePath is a directory"
    ),
    "into_itself": "fs/copy cannot copy a directory to itself or one of its descendants",
    "unsupported_type": "fs/copy only supports regular files, directories, and symlinks",
    "same_file": "fs/copy sourcePath and destinationPath are the same file",
}


class CopyRefused(InvalidRequest):
    """A copy the filesystem capability will not make; `reason` is one of `_COPY_REFUSALS`."""

    def __init__(self, reason: str) -> None:
        super().__init__(_COPY_REFUSALS[reason])
        self.reason = reason


class HttpRequestInvalid(InvalidParams):
    """The HTTP capability cannot send this request as given (`detail` says what)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"http/request {detail}")
        self.detail = detail


class HttpRequestFailed(InternalError):
    """The request failed before its response headers arrived (`detail` says how)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"http/request failed: {detail}")
        self.detail = detail


class HttpBodyFailed(InternalError):
    """Reading a buffered response body failed."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"failed to read http/request response body: {detail}")
        self.detail = detail


def _display(path: bytes) -> str:
    return path.decode("utf-8", "replace")


class WaitExpired(InternalError):
    """A filesystem operation waited too long for a FIFO, socket or device to become ready."""

    def __init__(self, path: bytes, ready: str, timeout_s: float) -> None:
        super().__init__(
            f"timed out after {timeout_s:g} s waiting for `{_display(path)}` to become {ready} "
            "(a FIFO, socket or device nobody serves; the limit is serve --fs-wait-timeout)"
        )


class FileReadTooLarge(InvalidRequest):
    """A whole-file read would take more memory than the server's budget leaves for it."""

    def __init__(self, path: bytes, limit: int) -> None:
        super().__init__(
            f"fs/readFile of `{_display(path)}` needs more than the {limit} bytes left of the "
            "server's budget for whole-file reads (serve --max-memory); read large or unbounded "
            "files in blocks with fs/open and fs/readBlock"
        )


class HttpBodyTooLarge(InternalError):
    """A buffered `http/request` body would take more memory than the budget leaves for it."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"failed to read http/request response body: it exceeds the {limit} bytes left of "
            "the server's budget for buffered bodies (serve --max-memory); send the request "
            "with streamResponse: true to receive the body as http/request/bodyDelta "
            "notifications"
        )


class StdinBudgetExhausted(InternalError):
    """Pending stdin of all processes together would exceed the server's budget."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"failed to write to process stdin: processes that do not read their input hold "
            f"the server's budget for pending stdin ({limit} bytes, serve --max-memory); retry "
            "once the process reads"
        )


StartFailureKind = str
"""`data.kind` of a `process/start` failure (codex 0.171): one of `START_FAILURE_KINDS`."""
START_FAILURE_KINDS = (
    "spawnNotFound",
    "spawnPermissionDenied",
    "spawnFailed",
    "sandboxUnavailable",
    "sandboxPreparation",
)


class StartFailed(RpcError):
    """`process/start` could not start the process; `data` is `{"kind": kind}` (codex 0.171).

    Spawn failures are -32603; sandbox refusals (`sandboxUnavailable`, `sandboxPreparation`)
    are -32602.
    """

    def __init__(self, message: str, kind: StartFailureKind) -> None:
        code = INVALID_PARAMS if kind.startswith("sandbox") else INTERNAL_ERROR
        super().__init__(message, code=code, data={"kind": kind})
        self.kind = kind

    @classmethod
    def from_os_error(cls, exc: OSError) -> StartFailed:
        """A spawn's OS error: ENOENT → `spawnNotFound`, EACCES/EPERM →
        `spawnPermissionDenied`, anything else `spawnFailed`; the text is Rust's."""
        err = exc.errno or _errno.EIO
        if err == _errno.ENOENT:
            kind = "spawnNotFound"
        elif err in (_errno.EACCES, _errno.EPERM):
            kind = "spawnPermissionDenied"
        else:
            kind = "spawnFailed"
        return cls(os_error_text(err), kind)


_CONFIG_PATH_REFUSALS = {
    "none": "at least one config or requirements path is required",
    "empty": "TOML paths must contain at least one key segment",
}


class ConfigPathsInvalid(InvalidParams):
    """`environmentConfig/read` key paths the executor refuses; `reason` is `none` or `empty`."""

    def __init__(self, reason: str) -> None:
        super().__init__(_CONFIG_PATH_REFUSALS[reason])
        self.reason = reason


class ConfigLoadFailed(InternalError):
    """An executor config file could not be read or parsed (`detail` says which and why)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"failed to load executor-local config: {detail}")
        self.detail = detail


class CodexHomeInvalid(InternalError):
    """`$CODEX_HOME` names a path that is missing or not a directory. Config reads word it
    with the `failed to find Codex home: ` prefix (`for_config`)."""

    def __init__(self, path: str, *, exists: bool, for_config: bool = False) -> None:
        problem = "is not a directory" if exists else "does not exist"
        prefix = "failed to find Codex home: " if for_config else ""
        super().__init__(f'{prefix}CODEX_HOME points to "{path}", but that path {problem}')
        self.path = path
        self.exists = exists


class TooManyCapabilityRoots(InvalidRequest):
    def __init__(self, limit: int) -> None:
        super().__init__(f"capability root discovery accepts at most {limit} roots")
        self.limit = limit


_BY_CODE: dict[int, type[RpcError]] = {
    INVALID_REQUEST: InvalidRequest,
    METHOD_NOT_FOUND: MethodNotFound,
    INVALID_PARAMS: InvalidParams,
    INTERNAL_ERROR: InternalError,
    NOT_FOUND: NotFound,
    SESSION_ATTACHED: SessionAttached,
}


def from_jsonrpc_error(code: int, message: str, data: object = None) -> RpcError:
    """Build the most specific `RpcError` subclass for a wire error."""
    return _BY_CODE.get(code, RpcError)(message, code=code, data=data)


# musl's strerror() texts: the reference binary is statically linked against musl, and Rust's
# io::Error prints strerror_r() output, so these (not glibc's) are what clients see.
_MUSL_STRERROR: dict[int, str] = {
    _errno.EPERM: "Operation not permitted",
    _errno.ENOENT: "No such file or directory",
    _errno.ESRCH: "No such process",
    _errno.EINTR: "Interrupted system call",
    _errno.EIO: "I/O error",
    _errno.ENXIO: "No such device or address",
    _errno.E2BIG: "Argument list too long",
    _errno.ENOEXEC: "Exec format error",
    _errno.EBADF: "Bad file descriptor",
    _errno.ECHILD: "No child process",
    _errno.EAGAIN: "Resource temporarily unavailable",
    _errno.ENOMEM: "Out of memory",
    _errno.EACCES: "Permission denied",
    _errno.EFAULT: "Bad address",
    _errno.ENOTBLK: "Block device required",
    _errno.EBUSY: "Resource busy",
    _errno.EEXIST: "File exists",
    _errno.EXDEV: "Cross-device link",
    _errno.ENODEV: "No such device",
    _errno.ENOTDIR: "Not a directory",
    _errno.EISDIR: "Is a directory",
    _errno.EINVAL: "Invalid argument",
    _errno.ENFILE: "Too many open files in system",
    _errno.EMFILE: "No file descriptors available",
    _errno.ENOTTY: "Not a tty",
    _errno.ETXTBSY: "Text file busy",
    _errno.EFBIG: "File too large",
    _errno.ENOSPC: "No space left on device",
    _errno.ESPIPE: "Invalid seek",
    _errno.EROFS: "Read-only file system",
    _errno.EMLINK: "Too many links",
    _errno.EPIPE: "Broken pipe",
    _errno.EDOM: "Domain error",
    _errno.ERANGE: "Result not representable",
    _errno.EDEADLK: "Resource deadlock would occur",
    _errno.ENAMETOOLONG: "Filename too long",
    _errno.ENOLCK: "No locks available",
    _errno.ENOSYS: "Function not implemented",
    _errno.ENOTEMPTY: "Directory not empty",
    _errno.ELOOP: "Symbolic link loop",
    _errno.ENOMSG: "No message of desired type",
    _errno.EIDRM: "Identifier removed",
    _errno.ENODATA: "No data available",
    _errno.ETIME: "Device timeout",
    _errno.EPROTO: "Protocol error",
    _errno.EBADMSG: "Bad message",
    _errno.EOVERFLOW: "Value too large for data type",
    _errno.EILSEQ: "Illegal byte sequence",
    _errno.ENOTSOCK: "Not a socket",
    _errno.EDESTADDRREQ: "Destination address required",
    _errno.EMSGSIZE: "Message too large",
    _errno.EPROTOTYPE: "Protocol wrong type for socket",
    _errno.ENOPROTOOPT: "Protocol not available",
    _errno.EPROTONOSUPPORT: "Protocol not supported",
    _errno.EOPNOTSUPP: "Not supported",
    _errno.EAFNOSUPPORT: "Address family not supported by protocol",
    _errno.EADDRINUSE: "Address in use",
    _errno.EADDRNOTAVAIL: "Address not available",
    _errno.ENETDOWN: "Network is down",
    _errno.ENETUNREACH: "Network unreachable",
    _errno.ENETRESET: "Connection reset by network",
    _errno.ECONNABORTED: "Connection aborted",
    _errno.ECONNRESET: "Connection reset by peer",
    _errno.ENOBUFS: "No buffer space available",
    _errno.EISCONN: "Socket is connected",
    _errno.ENOTCONN: "Socket not connected",
    _errno.ETIMEDOUT: "Operation timed out",
    _errno.ECONNREFUSED: "Connection refused",
    _errno.EHOSTDOWN: "Host is down",
    _errno.EHOSTUNREACH: "Host is unreachable",
    _errno.EALREADY: "Operation already in progress",
    _errno.EINPROGRESS: "Operation in progress",
    _errno.ESTALE: "Stale file handle",
    _errno.EDQUOT: "Quota exceeded",
    _errno.ECANCELED: "Operation canceled",
}


def os_error_text(err: int) -> str:
    """Render errno `err` as Rust's io::Error does on the reference: `<text> (os error N)`."""
    text = _MUSL_STRERROR.get(err) or f"Unknown error {err}"
    return f"{text} (os error {err})"


def io_error(exc: OSError) -> RpcError:
    """Map an OSError from a filesystem operation with the reference's io::ErrorKind table.

    NotFound -> -32004; PermissionDenied and InvalidInput -> -32600; everything else -> -32603.
    """
    err = exc.errno
    if err is None:
        return InternalError(str(exc))
    message = os_error_text(err)
    if err == _errno.ENOENT:
        return NotFound(message)
    if err in (_errno.EACCES, _errno.EPERM, _errno.EINVAL):
        return InvalidRequest(message)
    return InternalError(message)


@contextlib.contextmanager
def os_errors() -> Iterator[None]:
    """Map builtin `OSError`s to the executor's errors (ours pass through)."""
    try:
        yield
    except RpcError:
        raise
    except OSError as exc:
        raise io_error(exc) from None


def to_jsonrpc_error(exc: BaseException) -> RpcError:
    """Translate any exception raised by a handler into the error the client sees."""
    if isinstance(exc, RpcError):
        return exc
    if isinstance(exc, PathUriError):
        return from_jsonrpc_error(exc.code, exc.message)
    if isinstance(exc, OSError):
        return io_error(exc)
    return InternalError(f"internal error: {type(exc).__name__}: {exc}")
