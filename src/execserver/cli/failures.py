"""What the client commands say when the executor cannot be used: one line and an exit code.

Every message names the executor (`TargetContext.description`); a refused token comes with the
server's own reason and what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass

from execserver.cli.exit_codes import CliError, ExitCode
from execserver.client.environments import EnvironmentsError
from execserver.environment import ProcessFailed
from execserver.errors import (
    AuthenticationFailed,
    ConnectError,
    ExecServerError,
    HandshakeRejected,
    MessageTooLarge,
    RecoveryFailed,
    RpcError,
    TransportError,
)

TOKEN_HINT = "--token-file FILE (or $EXECSERVER_TOKEN)"


@dataclass(frozen=True, slots=True)
class TargetContext:
    description: str
    """The TARGET as the user named it (the URL, or `id (url)`)."""
    token_given: bool


def _refused(exc: HandshakeRejected, context: TargetContext) -> CliError:
    reason = f"HTTP {exc.status}" + (f": {exc.body}" if exc.body else "")
    if exc.status == 401 and not context.token_given:
        hint = f"this server needs a token: pass {TOKEN_HINT}"
    elif exc.status == 401:
        hint = (
            "the token was not accepted: check it is the one the server reads "
            "(--ws-token-file), or that the JWT is valid now"
        )
    elif exc.status == 403:
        hint = "the server refuses this request (a browser Origin header?)"
    else:
        hint = "is this an exec-server WebSocket URL?"
    return CliError(
        f"{context.description} refused the connection ({reason}); {hint}", ExitCode.CONNECTION
    )


def _connect_hint(message: str, description: str) -> str:
    if "not trusted" in message:
        return "; pass --cacert FILE with the CA that signed the server's certificate"
    if "during the handshake" in message and description.startswith("ws://"):
        return " (a wss:// server? then use wss://)"
    return ""


def explain(exc: BaseException, context: TargetContext) -> CliError:
    """The `CliError` for a failure to reach or keep the executor (or any other of ours)."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, HandshakeRejected):
        return _refused(exc, context)
    if isinstance(exc, AuthenticationFailed):
        hint = "check the harness token" if context.token_given else f"pass {TOKEN_HINT}"
        return CliError(f"{context.description}: {exc}; {hint}", ExitCode.CONNECTION)
    if isinstance(exc, ConnectError):
        message = str(exc)
        return CliError(message + _connect_hint(message, context.description), ExitCode.CONNECTION)
    if isinstance(exc, RecoveryFailed):
        return CliError(f"lost the connection to {context.description}: {exc}", ExitCode.CONNECTION)
    if isinstance(exc, TransportError | ProcessFailed):
        return CliError(f"{context.description}: {exc}", ExitCode.CONNECTION)
    if isinstance(exc, EnvironmentsError):
        return CliError(str(exc).rstrip("\n"), ExitCode.USAGE)
    if isinstance(exc, MessageTooLarge):
        return CliError(str(exc), ExitCode.FAILED)
    if isinstance(exc, RpcError):
        return CliError(f"{context.description}: {exc.message}", ExitCode.FAILED)
    if isinstance(exc, ExecServerError):
        return CliError(f"{context.description}: {exc}", ExitCode.CONNECTION)
    raise exc


__all__ = ["TargetContext", "explain"]
