"""Who may call the registry: bearer tokens per role, and optional per-token environment scopes.

Token files hold one token per line (blank lines and `#` comments ignored); a line
`sha256:<64 hex>` holds a token's SHA-256 instead of the token. Only digests are kept in
memory, and a presented token is compared against every digest in constant time.

A scopes file (TOML, or JSON when its name ends in `.json`) restricts tokens to environments:

    [[scope]]
    token_sha256 = "<64 hex>"        # or: token = "<the token>"
    environments = ["team-a-*", "shared"]   # fnmatch globs (* ? [..]), case-sensitive

With a scopes file, a token may use an environment only if one of its entries has a pattern
matching it; a token without an entry may use none. Without one, any accepted token may use
any environment. A role without a token file accepts any bearer (or none).
"""

from __future__ import annotations

import enum
import fnmatch
import hashlib
import hmac
import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HEX_DIGITS = frozenset("0123456789abcdef")


class AccessConfigError(ValueError):
    """An unusable token or scopes file; `str()` names the file and the problem."""


class Role(enum.Enum):
    EXECUTOR = "executor"
    HARNESS = "harness"
    METRICS = "metrics"


class Verdict(enum.Enum):
    ALLOWED = "allowed"
    UNAUTHORIZED = "unauthorized"
    """No or an unknown bearer token: 401."""
    FORBIDDEN = "forbidden"
    """A known token outside its scopes: 403."""


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _parse_digest(text: str, where: str) -> bytes:
    text = text.strip().lower()
    if len(text) != 64 or not set(text) <= _HEX_DIGITS:
        raise AccessConfigError(f"{where}: expected 64 hex digits of a SHA-256")
    return bytes.fromhex(text)


def _contains(digests: Iterable[bytes], candidate: bytes) -> bool:
    """Constant-time membership: every digest is compared, whatever matches."""
    found = False
    for digest in digests:
        found |= hmac.compare_digest(digest, candidate)
    return found


@dataclass(frozen=True, slots=True)
class TokenSet:
    """The tokens of one role, as digests."""

    digests: tuple[bytes, ...]

    @classmethod
    def load(cls, path: Path) -> TokenSet:
        """Read a token file (format in the module docstring).

        Raises:
            AccessConfigError: unreadable, malformed or empty.
        """
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise AccessConfigError(f"{path}: {exc}") from None
        digests = []
        for number, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("sha256:"):
                digests.append(_parse_digest(line[len("sha256:") :], f"{path}:{number}"))
            else:
                digests.append(token_digest(line))
        if not digests:
            raise AccessConfigError(f"{path}: no token")
        return cls(tuple(digests))

    def accepts(self, token: str) -> bool:
        return _contains(self.digests, token_digest(token))


@dataclass(frozen=True, slots=True)
class Scopes:
    """Environment patterns per token digest."""

    patterns: Mapping[bytes, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Scopes:
        """Read a scopes file (format in the module docstring).

        Raises:
            AccessConfigError: unreadable or malformed.
        """
        try:
            text = path.read_text()
            document: Any = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise AccessConfigError(f"{path}: {exc}") from None
        entries = document.get("scope") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise AccessConfigError(f"{path}: expected a list `scope` of tables")
        patterns: dict[bytes, tuple[str, ...]] = {}
        for index, entry in enumerate(entries):
            where = f"{path}: scope[{index}]"
            if not isinstance(entry, dict) or set(entry) - {
                "token",
                "token_sha256",
                "environments",
            }:
                raise AccessConfigError(f"{where}: expected keys token|token_sha256, environments")
            if ("token" in entry) == ("token_sha256" in entry):
                raise AccessConfigError(f"{where}: give exactly one of token, token_sha256")
            if "token" in entry:
                if not isinstance(entry["token"], str) or not entry["token"]:
                    raise AccessConfigError(f"{where}: token must be a non-empty string")
                digest = token_digest(entry["token"])
            else:
                if not isinstance(entry["token_sha256"], str):
                    raise AccessConfigError(f"{where}: token_sha256 must be a string")
                digest = _parse_digest(entry["token_sha256"], where)
            environments = entry.get("environments")
            if not isinstance(environments, list) or not all(
                isinstance(p, str) and p for p in environments
            ):
                raise AccessConfigError(f"{where}: environments must be a list of patterns")
            patterns[digest] = patterns.get(digest, ()) + tuple(environments)
        return cls(patterns)

    def allows(self, token: str, environment_id: str) -> bool:
        candidate = token_digest(token)
        allowed = False
        # Every entry is visited and compared in constant time; only the matching one counts.
        for digest, patterns in self.patterns.items():
            if hmac.compare_digest(digest, candidate):
                allowed = any(fnmatch.fnmatchcase(environment_id, p) for p in patterns)
        return allowed


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """The relay's bearer-token rules. A role mapped to None accepts any bearer."""

    tokens: Mapping[Role, TokenSet | None] = field(default_factory=dict)
    scopes: Scopes | None = None

    def is_open(self, role: Role) -> bool:
        """Whether `role` needs no token."""
        return self.tokens.get(role) is None

    def check(self, role: Role, authorization: str | None, environment_id: str | None) -> Verdict:
        """Whether a request with this `Authorization` header may act as `role` on
        `environment_id` (None: no environment, e.g. metrics)."""
        token = _bearer(authorization)
        tokens = self.tokens.get(role)
        if tokens is not None and (token is None or not tokens.accepts(token)):
            return Verdict.UNAUTHORIZED
        if self.scopes is not None and environment_id is not None:
            if token is None:
                return Verdict.UNAUTHORIZED
            if not self.scopes.allows(token, environment_id):
                return Verdict.FORBIDDEN
        return Verdict.ALLOWED


def _bearer(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


__all__ = [
    "AccessConfigError",
    "AccessPolicy",
    "Role",
    "Scopes",
    "TokenSet",
    "Verdict",
    "token_digest",
]
