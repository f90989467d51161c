"""WebSocket authentication: capability token or HS256 JWT on the upgrade request.

Configuration is validated in the reference's stages and with its messages
(docs/protocol.md "Authentication"): `check_auth_flags` before the listen URL is looked at,
`load_authenticator` (which reads the files) after it. A request is checked after the
WebSocket upgrade checks pass, as the reference does; a failure is a 401 whose body is one of
the reference's fixed strings, checked in its order.

Each accepted connection gets a principal: who it is, as far as the configured scheme can
tell. Sessions remember the principal that created them and only that principal may resume
them (deliberate difference `resume_same_principal`).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from execserver.token_files import TokenFileError, check_mode, check_strength

CAPABILITY_TOKEN = "capability-token"
SIGNED_BEARER_TOKEN = "signed-bearer-token"
AUTH_MODES = (CAPABILITY_TOKEN, SIGNED_BEARER_TOKEN)
DEFAULT_MAX_CLOCK_SKEW_S = 30
MIN_SECRET_BYTES = 32
_I64_MAX = (1 << 63) - 1
_I64_MIN = -(1 << 63)

ANONYMOUS = "anonymous"
"""The principal of every connection to a server without authentication."""


class AuthConfigError(ValueError):
    """An unusable authentication setting; `str()` is the reference's message."""


class AuthFailure(Exception):
    """A rejected upgrade; `body` is the 401 body."""

    def __init__(self, body: str) -> None:
        super().__init__(body)
        self.body = body


@dataclass(frozen=True, slots=True)
class AuthOptions:
    """The `--ws-*` flags as given (None = not given)."""

    mode: str | None = None
    token_file: str | None = None
    token_sha256: str | None = None
    shared_secret_file: str | None = None
    issuer: str | None = None
    audience: str | None = None
    max_clock_skew_seconds: int | None = None

    @property
    def _jwt_flags(self) -> bool:
        return any(
            value is not None
            for value in (
                self.shared_secret_file,
                self.issuer,
                self.audience,
                self.max_clock_skew_seconds,
            )
        )

    @property
    def _token_flags(self) -> bool:
        return self.token_file is not None or self.token_sha256 is not None


class Authenticator(Protocol):
    def authenticate(self, authorization: str | None) -> str:
        """The principal of a request with this `Authorization` value, or raise AuthFailure."""
        ...


def check_auth_flags(options: AuthOptions) -> None:
    """The checks the reference makes before it parses `--listen` (no file is read here)."""
    if options.mode is None:
        if options._jwt_flags or options._token_flags:
            raise AuthConfigError(
                "websocket auth flags require `--ws-auth capability-token` or "
                "`--ws-auth signed-bearer-token`"
            )
        return
    if options.mode == CAPABILITY_TOKEN:
        if options._jwt_flags:
            raise AuthConfigError(
                "`--ws-shared-secret-file`, `--ws-issuer`, `--ws-audience`, and "
                "`--ws-max-clock-skew-seconds` require `--ws-auth signed-bearer-token`"
            )
        if options.token_file is not None and options.token_sha256 is not None:
            raise AuthConfigError(
                "`--ws-token-file` and `--ws-token-sha256` are mutually exclusive"
            )
        if options.token_file is None and options.token_sha256 is None:
            raise AuthConfigError(
                "`--ws-token-file` or `--ws-token-sha256` is required when "
                "`--ws-auth capability-token` is set"
            )
        if options.token_sha256 is not None:
            _parse_digest(options.token_sha256)
        return
    if options._token_flags:
        raise AuthConfigError(
            "`--ws-token-file` and `--ws-token-sha256` require `--ws-auth capability-token`, "
            "not `signed-bearer-token`"
        )
    if options.shared_secret_file is None:
        raise AuthConfigError(
            "`--ws-shared-secret-file` is required when `--ws-auth signed-bearer-token` is set"
        )


def load_authenticator(
    options: AuthOptions,
    *,
    clock: Callable[[], float] = time.time,
    warn: Callable[[str], None] | None = None,
) -> Authenticator | None:
    """Read the token or secret file and build the authenticator (after `check_auth_flags`).

    Deliberate difference `weak_token_files_refused` (token_files.py): a file others can write,
    or a capability token under 16 bytes, is refused; `warn` hears about a world-readable file.
    """
    if options.mode is None:
        return None
    if options.mode == CAPABILITY_TOKEN:
        if options.token_sha256 is not None:
            return CapabilityToken(_parse_digest(options.token_sha256))
        assert options.token_file is not None
        token = _read_secret(options.token_file, warn)
        try:
            check_strength(options.token_file, token)
        except TokenFileError as exc:
            raise AuthConfigError(str(exc)) from None
        return CapabilityToken(hashlib.sha256(token).digest())
    assert options.shared_secret_file is not None
    secret = _read_secret(options.shared_secret_file, warn)
    if len(secret) < MIN_SECRET_BYTES:
        raise AuthConfigError(
            f"signed websocket bearer secret {options.shared_secret_file} must be at least "
            f"{MIN_SECRET_BYTES} bytes"
        )
    skew = options.max_clock_skew_seconds
    if skew is None:
        skew = DEFAULT_MAX_CLOCK_SKEW_S
    if skew > _I64_MAX:
        raise AuthConfigError("websocket auth clock skew must fit in a signed 64-bit integer")
    return SignedBearerToken(
        secret,
        issuer=(options.issuer or "").strip() or None,
        audience=(options.audience or "").strip() or None,
        max_clock_skew_s=skew,
        clock=clock,
    )


def _parse_digest(text: str) -> bytes:
    value = text.strip()
    if len(value) != 64:
        raise AuthConfigError("--ws-token-sha256 must be a 64-character hex SHA-256 digest")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise AuthConfigError(
            "--ws-token-sha256 must be a 64-character hex SHA-256 digest"
        ) from None


def _read_secret(path: str, warn: Callable[[str], None] | None) -> bytes:
    try:
        with open(path, "rb") as file:
            raw = file.read()
            st = os.fstat(file.fileno())
    except OSError as exc:
        raise AuthConfigError(
            f"failed to read websocket auth secret {path}: {exc.strerror} (os error {exc.errno})"
        ) from None
    secret = raw.strip()
    if not secret:
        raise AuthConfigError(f"websocket auth secret {path} must not be empty")
    try:
        check_mode(path, st, warn)
    except TokenFileError as exc:
        raise AuthConfigError(str(exc)) from None
    return secret


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` value (scheme case-insensitive)."""
    if authorization is None:
        raise AuthFailure("missing websocket bearer token")
    if not authorization.isascii():
        raise AuthFailure("invalid authorization header")
    scheme, sep, token = authorization.partition(" ")
    token = token.strip()
    if not sep or scheme.lower() != "bearer" or not token:
        raise AuthFailure("invalid authorization header")
    return token


class CapabilityToken:
    """One shared token, known to the server only by its SHA-256 digest."""

    def __init__(self, digest: bytes) -> None:
        self._digest = digest

    def authenticate(self, authorization: str | None) -> str:
        token = bearer_token(authorization)
        presented = hashlib.sha256(token.encode()).digest()
        if not hmac.compare_digest(presented, self._digest):
            raise AuthFailure("invalid websocket bearer token")
        # Everyone holding the token is the same principal.
        return CAPABILITY_TOKEN


class SignedBearerToken:
    """HS256 JWTs signed with a shared secret; `exp` required, optional `nbf`/`iss`/`aud`."""

    def __init__(
        self,
        secret: bytes,
        *,
        issuer: str | None,
        audience: str | None,
        max_clock_skew_s: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self._skew = max_clock_skew_s
        self._clock = clock
        # PyJWT (~60 ms of imports) is loaded by the servers that take JWTs, not by every
        # one: here, so that the first handshake does not pay for it.
        importlib.import_module("jwt")

    def authenticate(self, authorization: str | None) -> str:
        token = bearer_token(authorization)
        claims = self._decode(token)
        now = int(self._clock())
        if now > _saturate(claims["exp"] + self._skew):
            raise AuthFailure("expired websocket jwt")
        nbf = claims.get("nbf")
        if nbf is not None and now < _saturate(nbf - self._skew):
            raise AuthFailure("websocket jwt is not valid yet")
        if self._issuer is not None and claims.get("iss") != self._issuer:
            raise AuthFailure("websocket jwt issuer mismatch")
        if self._audience is not None and not _audience_matches(claims.get("aud"), self._audience):
            raise AuthFailure("websocket jwt audience mismatch")
        subject = claims.get("sub")
        if isinstance(subject, str):
            return f"jwt-sub:{subject}"
        # No subject: the token itself is the only identity there is.
        return "jwt:" + hashlib.sha256(token.encode()).hexdigest()

    def _decode(self, token: str) -> dict[str, Any]:
        import jwt  # loaded by __init__

        invalid = AuthFailure("invalid websocket jwt")
        # Unpadded base64url only, like the reference's decoder.
        if "=" in token:
            raise invalid
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                options={
                    "verify_signature": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": False,
                    "verify_sub": False,
                    "verify_jti": False,
                    "require": [],
                },
            )
        except (jwt.InvalidTokenError, json.JSONDecodeError, ValueError, TypeError):
            raise invalid from None
        if not isinstance(claims, dict) or not _is_i64(claims.get("exp")):
            raise invalid
        if claims.get("nbf") is not None and not _is_i64(claims["nbf"]):
            raise invalid
        if claims.get("iss") is not None and not isinstance(claims["iss"], str):
            raise invalid
        # RFC 7519 §4.1.2: `sub` is a string (deliberate difference `jwt_sub_must_be_string`:
        # the reference accepts numbers and booleans there).
        if claims.get("sub") is not None and not isinstance(claims["sub"], str):
            raise invalid
        aud = claims.get("aud")
        if aud is not None and not (
            isinstance(aud, str) or (isinstance(aud, list) and all(isinstance(a, str) for a in aud))
        ):
            raise invalid
        return claims


def _is_i64(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and _I64_MIN <= value <= _I64_MAX


def _saturate(value: int) -> int:
    return max(_I64_MIN, min(_I64_MAX, value))


def _audience_matches(aud: object, expected: str) -> bool:
    if isinstance(aud, str):
        return aud == expected
    if isinstance(aud, list):
        return expected in aud
    return False


__all__ = [
    "ANONYMOUS",
    "AUTH_MODES",
    "AuthConfigError",
    "AuthFailure",
    "AuthOptions",
    "Authenticator",
    "CapabilityToken",
    "SignedBearerToken",
    "bearer_token",
    "check_auth_flags",
    "load_authenticator",
]
