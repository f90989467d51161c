"""The environment registry's HTTP JSON (RELAY.md §2), shared by executor, harness and relay.

Bodies are msgspec structs whose field order is the key order codex writes (compact JSON,
no spaces). A `NoisePublicKey` is strict like serde's `deny_unknown_fields`: exactly its
three members, the suite name, and canonical padded base64 of 32 and 1184 bytes. Other
bodies tolerate unknown members, as both codex clients do. Also here: the header names,
the rendezvous rejection-reason allowlist and the registry URL helper. Pure data: no I/O.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final, TypeVar

import msgspec

SECURITY_PROFILE: Final = "noise_hybrid_ik_v1"
NOISE_SUITE: Final = "Noise_hybridIK_X25519+MLKEM768_AESGCM_SHA256"
X25519_PUBLIC_KEY_BYTES: Final = 32
MLKEM768_PUBLIC_KEY_BYTES: Final = 1184
MAX_AUTHORIZATION_BYTES: Final = 4096
"""The executor refuses a `harness_key_authorization` longer than this (UTF-8 bytes)."""

REGISTER: Final = "register"
CONNECT: Final = "connect"
VALIDATE: Final = "validate"

STREAM_ID_HEADER: Final = "x-codex-noise-stream-id"
"""Sent by the executor on `/validate`: the stream whose handshake is being validated."""
REJECTION_REASON_HEADER: Final = "x-codex-rendezvous-rejection-reason"
"""On a refused rendezvous upgrade: why, as one of `REJECTION_REASONS`."""
CHATGPT_ACCOUNT_ID_HEADER: Final = "chatgpt-account-id"
"""Optionally sent by the harness on `/connect`."""

REJECTION_REASONS: Final = frozenset(
    {
        "expired",
        "missing_role",
        "missing_expiry",
        "missing_signature",
        "missing_version",
        "missing_executor_registration_id",
        "unexpected_executor_registration_id",
        "malformed_query",
        "invalid_role",
        "invalid_expiry",
        "invalid_signature",
        "invalid_secret",
        "extra_query_param",
        "pod_draining",
        "unknown_route",
        "wrong_rendezvous_cluster",
        "route_unavailable",
    }
)
"""The reasons the codex executor logs (others are accepted but not logged)."""


class ApiError(ValueError):
    """A body that does not decode as the expected registry message."""


class Base64Bytes(bytes):
    """Bytes carried as standard padded base64, strictly: canonical padding, no stray
    characters, unused bits zero (as Rust's `base64` crate decodes)."""

    __slots__ = ()

    @classmethod
    def parse(cls, text: str) -> Base64Bytes:
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("invalid base64") from None
        # Only the canonical encoding of `data` is accepted (catches non-zero unused bits).
        if base64.b64encode(data).decode("ascii") != text:
            raise ValueError("invalid base64")
        return cls(data)


def _dec_hook(type_: type[Any], obj: Any) -> Any:
    if type_ is Base64Bytes:
        if not isinstance(obj, str):
            raise ValueError("expected a base64 string")
        return Base64Bytes.parse(obj)
    raise NotImplementedError(f"no decoder for {type_!r}")


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Base64Bytes):
        return base64.b64encode(obj).decode("ascii")
    raise NotImplementedError(f"cannot encode {type(obj)!r}")


class NoisePublicKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A Noise static public key (`NoiseChannelPublicKey`): X25519 and ML-KEM-768 halves."""

    suite: str
    x25519_public_key: Base64Bytes
    mlkem768_public_key: Base64Bytes

    def __post_init__(self) -> None:
        if self.suite != NOISE_SUITE:
            raise ValueError(f"unsupported Noise suite `{self.suite}`")
        if len(self.x25519_public_key) != X25519_PUBLIC_KEY_BYTES:
            raise ValueError(
                f"x25519_public_key must be {X25519_PUBLIC_KEY_BYTES} bytes, "
                f"got {len(self.x25519_public_key)}"
            )
        if len(self.mlkem768_public_key) != MLKEM768_PUBLIC_KEY_BYTES:
            raise ValueError(
                f"mlkem768_public_key must be {MLKEM768_PUBLIC_KEY_BYTES} bytes, "
                f"got {len(self.mlkem768_public_key)}"
            )

    @classmethod
    def from_raw(cls, x25519: bytes, mlkem768: bytes) -> NoisePublicKey:
        """The key whose halves are these raw public-key bytes.

        Raises:
            ValueError: a half has the wrong length.
        """
        return cls(NOISE_SUITE, Base64Bytes(x25519), Base64Bytes(mlkem768))


class RegisterRequest(msgspec.Struct, frozen=True):
    """`POST …/register` body (executor)."""

    security_profile: str
    executor_public_key: NoisePublicKey


class RegisterResponse(msgspec.Struct, frozen=True):
    """`…/register` answer: where the executor dials out to, and its registration id."""

    environment_id: str
    url: str
    security_profile: str
    executor_registration_id: str


class ConnectRequest(msgspec.Struct, frozen=True):
    """`POST …/connect` body (harness)."""

    harness_public_key: NoisePublicKey


class ConnectResponse(msgspec.Struct, frozen=True):
    """`…/connect` answer: the connect bundle for one rendezvous WebSocket attempt."""

    environment_id: str
    url: str
    security_profile: str
    executor_registration_id: str
    executor_public_key: NoisePublicKey
    harness_key_authorization: str


class ValidateRequest(msgspec.Struct, frozen=True):
    """`POST …/validate` body (executor), with the `STREAM_ID_HEADER` header."""

    executor_registration_id: str
    harness_public_key: NoisePublicKey
    harness_key_authorization: str


class ValidateResponse(msgspec.Struct, frozen=True):
    """`…/validate` answer; only `{"valid": true}` lets the handshake complete."""

    valid: bool


class ErrorDetail(msgspec.Struct, frozen=True):
    """The `error` member of an `ErrorBody`: a machine code and a sentence."""

    code: str
    message: str


class ErrorBody(msgspec.Struct, frozen=True):
    """`{"error":{"code","message"}}`, the failure body both codex clients print."""

    error: ErrorDetail

    @classmethod
    def of(cls, code: str, message: str) -> ErrorBody:
        return cls(ErrorDetail(code, message))


T = TypeVar("T")

_ENCODER = msgspec.json.Encoder(enc_hook=_enc_hook)
_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def encode(message: msgspec.Struct) -> bytes:
    """Compact JSON of a registry message, keys in declaration order."""
    return _ENCODER.encode(message)


def decode(data: bytes, message_type: type[T]) -> T:
    """Decode a registry message of `message_type`.

    Raises:
        ApiError: the JSON is malformed or does not fit the message.
    """
    decoder = _DECODERS.get(message_type)
    if decoder is None:
        decoder = _DECODERS[message_type] = msgspec.json.Decoder(message_type, dec_hook=_dec_hook)
    try:
        result: T = decoder.decode(data)
    except (msgspec.DecodeError, ValueError) as exc:
        raise ApiError(str(exc)) from None
    return result


def registry_url(base_url: str, environment_id: str, operation: str) -> str:
    """`{base}/cloud/environment/{environment_id}/{operation}`, trailing `/`s of the base
    trimmed (as codex does)."""
    return f"{base_url.rstrip('/')}/cloud/environment/{environment_id}/{operation}"


def bearer(token: str) -> dict[str, str]:
    """The `Authorization` header codex sends with a registry request."""
    return {"Authorization": f"Bearer {token}"}


__all__ = [
    "CHATGPT_ACCOUNT_ID_HEADER",
    "CONNECT",
    "MAX_AUTHORIZATION_BYTES",
    "MLKEM768_PUBLIC_KEY_BYTES",
    "NOISE_SUITE",
    "REGISTER",
    "REJECTION_REASONS",
    "REJECTION_REASON_HEADER",
    "SECURITY_PROFILE",
    "STREAM_ID_HEADER",
    "VALIDATE",
    "X25519_PUBLIC_KEY_BYTES",
    "ApiError",
    "Base64Bytes",
    "ConnectRequest",
    "ConnectResponse",
    "ErrorBody",
    "ErrorDetail",
    "NoisePublicKey",
    "RegisterRequest",
    "RegisterResponse",
    "ValidateRequest",
    "ValidateResponse",
    "bearer",
    "decode",
    "encode",
    "registry_url",
]
