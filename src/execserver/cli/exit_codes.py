"""The exit codes of every client command (`run`, `info`, `cp`, `token`, …): one table.

`run` exits with the remote command's own code, as ssh does, so execserver's own outcomes use
the codes shells and coreutils already give them (`env`, `timeout`, bash): 125-127 when the
command could not be started, 128+N for a signal, 255 (ssh's) when the executor could not be
reached or was lost. A command that itself exits 1, 2 or 255 is indistinguishable from these,
exactly as with ssh; the one-line message on stderr tells them apart.

Commands added later extend `MEANINGS` here (and docs/cli.md, which a test compares with it).
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    TIMEOUT = 124
    CANNOT_START = 125
    NOT_EXECUTABLE = 126
    NOT_FOUND = 127
    SIGNAL_BASE = 128
    INTERRUPTED = 130
    BROKEN_PIPE = 141
    CONNECTION = 255


MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success (`run`, `attach`: the remote command exited 0; `attach`: detached "
    "with Ctrl-C)",
    ExitCode.FAILED: "the operation failed: a missing or unreadable file on either side "
    "(`cp`), a request the executor refused (`info`), an unknown process handle (`attach`, "
    "`kill`)",
    ExitCode.USAGE: "bad arguments or configuration: unknown option, bad TARGET, unknown "
    "environment id, no TARGET and no default, unusable token file or --cacert",
    ExitCode.TIMEOUT: "`run --timeout`: the command ran out of time (as `timeout(1)`; also an "
    "executor-side idle timeout)",
    ExitCode.CANNOT_START: "`run`: the command could not be started for another reason "
    "(missing -C directory, sandbox refusal, argv too large, process limit, --detach --timeout "
    "on an executor without server-side timeouts)",
    ExitCode.NOT_EXECUTABLE: "`run`: the remote command exists but cannot be executed",
    ExitCode.NOT_FOUND: "`run`: the remote command was not found",
    ExitCode.SIGNAL_BASE: "128+N: the remote command was killed by signal N",
    ExitCode.INTERRUPTED: "interrupted here with Ctrl-C (`run`: the remote command died of "
    "the interrupt)",
    ExitCode.BROKEN_PIPE: "our stdout was closed (e.g. `| head`); nothing more is printed",
    ExitCode.CONNECTION: "the executor could not be reached, refused our credentials or TLS, "
    "or was lost and did not come back within --reconnect-timeout",
}


class CliError(Exception):
    """A failure the command reports as one line on stderr and an exit code."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


__all__ = ["MEANINGS", "CliError", "ExitCode"]
