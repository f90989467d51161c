"""Bearer tokens per role and per-token environment scopes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from execserver.relay.service.access import (
    AccessConfigError,
    AccessPolicy,
    Role,
    Scopes,
    TokenSet,
    Verdict,
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def test_access_token_file_lines(tmp_path: Path) -> None:
    """Tokens one per line; comments and blanks ignored; `sha256:` lines hold digests."""
    path = write(tmp_path, "t", f"# executors\n\n  alpha  \nsha256:{sha('beta').upper()}\n")
    tokens = TokenSet.load(path)
    assert tokens.accepts("alpha")
    assert tokens.accepts("beta")
    assert not tokens.accepts("gamma")
    assert not tokens.accepts("sha256:" + sha("beta"))


@pytest.mark.parametrize("text", ["", "# only a comment\n", "sha256:abc\n"])
def test_access_token_file_errors(tmp_path: Path, text: str) -> None:
    """An empty token file or a malformed digest is a configuration error."""
    with pytest.raises(AccessConfigError):
        TokenSet.load(write(tmp_path, "t", text))
    with pytest.raises(AccessConfigError):
        TokenSet.load(tmp_path / "missing")


def test_access_roles_are_separate() -> None:
    """An executor token is not a harness token; a role without tokens is open."""
    policy = AccessPolicy(
        tokens={
            Role.EXECUTOR: TokenSet((hashlib.sha256(b"x").digest(),)),
            Role.HARNESS: TokenSet((hashlib.sha256(b"h").digest(),)),
        }
    )
    assert policy.check(Role.EXECUTOR, "Bearer x", "e") is Verdict.ALLOWED
    assert policy.check(Role.EXECUTOR, "bearer   x ", "e") is Verdict.ALLOWED
    assert policy.check(Role.HARNESS, "Bearer x", "e") is Verdict.UNAUTHORIZED
    assert policy.check(Role.EXECUTOR, None, "e") is Verdict.UNAUTHORIZED
    assert policy.check(Role.EXECUTOR, "Basic eDp4", "e") is Verdict.UNAUTHORIZED
    assert policy.check(Role.EXECUTOR, "Bearer", "e") is Verdict.UNAUTHORIZED
    assert policy.check(Role.METRICS, None, None) is Verdict.ALLOWED
    assert AccessPolicy().check(Role.HARNESS, None, "e") is Verdict.ALLOWED


def test_access_scopes_restrict_environments(tmp_path: Path) -> None:
    """With scopes, a token may use only environments matching its patterns; others none."""
    path = write(
        tmp_path,
        "scopes.toml",
        f"""
[[scope]]
token = "team-a"
environments = ["team-a-*", "shared"]

[[scope]]
token_sha256 = "{sha("team-b")}"
environments = ["team-b-?"]
""",
    )
    policy = AccessPolicy(scopes=Scopes.load(path))
    assert policy.check(Role.EXECUTOR, "Bearer team-a", "team-a-1") is Verdict.ALLOWED
    assert policy.check(Role.EXECUTOR, "Bearer team-a", "shared") is Verdict.ALLOWED
    assert policy.check(Role.EXECUTOR, "Bearer team-a", "team-b-1") is Verdict.FORBIDDEN
    assert policy.check(Role.HARNESS, "Bearer team-b", "team-b-1") is Verdict.ALLOWED
    assert policy.check(Role.HARNESS, "Bearer team-b", "team-b-12") is Verdict.FORBIDDEN
    assert policy.check(Role.HARNESS, "Bearer team-b", "TEAM-B-1") is Verdict.FORBIDDEN
    assert policy.check(Role.HARNESS, "Bearer stranger", "shared") is Verdict.FORBIDDEN
    assert policy.check(Role.HARNESS, None, "shared") is Verdict.UNAUTHORIZED
    assert policy.check(Role.METRICS, "Bearer stranger", None) is Verdict.ALLOWED


def test_access_scopes_json(tmp_path: Path) -> None:
    """A `.json` scopes file has the same shape."""
    path = write(tmp_path, "scopes.json", '{"scope": [{"token": "t", "environments": ["ci-*"]}]}')
    assert Scopes.load(path).allows("t", "ci-7")
    assert not Scopes.load(path).allows("t", "prod")


@pytest.mark.parametrize(
    "text",
    [
        "scope = 1",
        '[[scope]]\ntoken = "t"\n',
        '[[scope]]\ntoken = "t"\ntoken_sha256 = "00"\nenvironments = ["x"]',
        '[[scope]]\nenvironments = ["x"]',
        '[[scope]]\ntoken_sha256 = "nothex"\nenvironments = ["x"]',
        '[[scope]]\ntoken = "t"\nenvironments = ["x"]\nroles = ["executor"]',
        '[[scope]]\ntoken = "t"\nenvironments = [""]',
        "not toml at all [",
    ],
)
def test_access_scopes_errors(tmp_path: Path, text: str) -> None:
    """Malformed scopes files are configuration errors naming the file."""
    path = write(tmp_path, "scopes.toml", text)
    with pytest.raises(AccessConfigError, match=r"scopes\.toml"):
        Scopes.load(path)
