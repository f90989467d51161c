"""Build a child's environment from `env` and the optional `envPolicy` (PROTOCOL.md §10)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping

from execserver.protocol.process import ExecEnvPolicy

CORE_VARIABLES = frozenset(
    {
        "HOME",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "LOGNAME",
        "PATH",
        "SHELL",
        "TEMP",
        "TMP",
        "TMPDIR",
        "USER",
    }
)
DEFAULT_EXCLUDES = ("*KEY*", "*SECRET*", "*TOKEN*")
# Never handed to a child, even when the request names them explicitly.
ALWAYS_REMOVED = frozenset({"CODEX_EXEC_SERVER_EXIT_ON_STDIN_CLOSE"})
ALWAYS_REMOVED_CASELESS = frozenset({"OPENAI_IDENTITY_TOKEN_FILE", "OPENAI_FEDERATION_RULE_ID"})


@functools.lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    # Only `*` and `?` are special; everything else (including `[`) matches itself.
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _matches_any(name: str, patterns: Iterable[str]) -> bool:
    return any(_glob(pattern).fullmatch(name) for pattern in patterns)


def build_child_env(
    env: Mapping[str, str],
    policy: ExecEnvPolicy | None,
    server_env: Mapping[str, str],
) -> dict[str, str]:
    """The exact environment of a child, in the reference's order of steps."""
    if policy is None:
        result = dict(env)
    else:
        if policy.inherit == "all":
            result = dict(server_env)
        elif policy.inherit == "core":
            result = {k: v for k, v in server_env.items() if k in CORE_VARIABLES}
        else:
            result = {}
        if not policy.ignore_default_excludes:
            result = {k: v for k, v in result.items() if not _matches_any(k, DEFAULT_EXCLUDES)}
        if policy.exclude:
            result = {k: v for k, v in result.items() if not _matches_any(k, policy.exclude)}
        result.update(policy.set)
        if policy.include_only:
            result = {k: v for k, v in result.items() if _matches_any(k, policy.include_only)}
        result.update(env)
    for name in list(result):
        if name in ALWAYS_REMOVED or name.upper() in ALWAYS_REMOVED_CASELESS:
            del result[name]
    return result
