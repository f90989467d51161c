"""Child environment construction (PROTOCOL.md §10)."""

from __future__ import annotations

from execserver.local.env_policy import build_child_env
from execserver.protocol.process import ExecEnvPolicy

SERVER_ENV = {
    "HOME": "/root",
    "PATH": "/bin",
    "TERM": "xterm",
    "API_KEY": "k",
    "my_secret": "s",
    "FOO_TOKEN": "t",
    "PLAIN": "server",
    "CODEX_EXEC_SERVER_EXIT_ON_STDIN_CLOSE": "true",
}


def policy(**overrides: object) -> ExecEnvPolicy:
    fields: dict[str, object] = {
        "inherit": "all",
        "ignore_default_excludes": False,
        "exclude": [],
        "set": {},
        "include_only": [],
    }
    fields.update(overrides)
    return ExecEnvPolicy(**fields)  # type: ignore[arg-type]


def test_env_without_policy_is_exact() -> None:
    """Without envPolicy the child gets exactly `env`, minus the always-removed names."""
    env = {
        "A": "1",
        "CODEX_EXEC_SERVER_EXIT_ON_STDIN_CLOSE": "x",
        "Openai_Identity_Token_File": "f",
    }
    assert build_child_env(env, None, SERVER_ENV) == {"A": "1"}


def test_env_inherit_all_drops_default_excludes() -> None:
    """inherit=all starts from the server env and drops *KEY*/*SECRET*/*TOKEN* names."""
    result = build_child_env({}, policy(), SERVER_ENV)
    assert result == {"HOME": "/root", "PATH": "/bin", "TERM": "xterm", "PLAIN": "server"}


def test_env_ignore_default_excludes_keeps_secrets() -> None:
    """ignoreDefaultExcludes keeps secret-looking names (the always-removed list still applies)."""
    result = build_child_env({}, policy(ignore_default_excludes=True), SERVER_ENV)
    assert "API_KEY" in result and "my_secret" in result
    assert "CODEX_EXEC_SERVER_EXIT_ON_STDIN_CLOSE" not in result


def test_env_core_keeps_only_core_names() -> None:
    """inherit=core keeps HOME, PATH, ... and not TERM."""
    assert build_child_env({}, policy(inherit="core"), SERVER_ENV) == {
        "HOME": "/root",
        "PATH": "/bin",
    }


def test_env_order_of_steps() -> None:
    """exclude, then set, then includeOnly, then env overlays set."""
    result = build_child_env(
        {"PLAIN": "fromenv", "EXTRA": "e"},
        policy(
            inherit="none",
            exclude=["p*"],
            set={"PLAIN": "fromset", "KEEP": "k", "DROP": "d"},
            include_only=["k*", "pl?in"],
        ),
        SERVER_ENV,
    )
    assert result == {"KEEP": "k", "PLAIN": "fromenv", "EXTRA": "e"}


def test_env_globs_are_literal_except_star_and_question() -> None:
    """Only * and ? are wildcards; [ is literal; matching is case-insensitive."""
    result = build_child_env(
        {},
        policy(
            inherit="none", set={"A[1]": "x", "A1": "y", "ab": "z"}, include_only=["a[1]", "A?"]
        ),
        SERVER_ENV,
    )
    assert result == {"A[1]": "x", "ab": "z", "A1": "y"}
