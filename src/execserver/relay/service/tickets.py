"""Rendezvous tickets: the capability in a rendezvous URL (`/relay/{role}?ticket=…`).

A ticket is `base64url(payload) "." base64url(HMAC-SHA256(secret, domain || payload))`
without padding; the payload is the compact JSON array `[1, role, environment id,
registration id, expiry (UNIX s), nonce]`. Tickets are stateless: any process holding the
secret verifies them, so a relay restarted with the same secret (`--state-dir`,
`--ticket-secret-file`) accepts the URLs it issued before. Verification failures carry a
reason from the codex allowlist and the HTTP status to answer. Pure: no I/O (the secret file
helpers at the end are the exception, and say so).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import msgspec

TICKET_VERSION: Final = 1
EXECUTOR: Final = "executor"
HARNESS: Final = "harness"
Role = Literal["executor", "harness"]
MIN_SECRET_BYTES: Final = 32
SECRET_FILE_NAME: Final = "ticket-secret"
_DOMAIN: Final = b"execserver-relay-ticket/v1\x00"
_MAX_TICKET_CHARS: Final = 2048


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a ticket grants: `role` may open a rendezvous socket for this registration."""

    role: Role
    environment_id: str
    registration_id: str
    expires_at: int
    """UNIX seconds."""
    nonce: str = ""
    """Random for harness tickets (each is usable once), empty for executor tickets."""


class TicketRejected(Exception):
    """A ticket that does not grant the upgrade.

    Attributes:
        reason: the `x-codex-rendezvous-rejection-reason` value.
        status: the HTTP status to answer (4xx: a codex executor re-registers).
    """

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


_PAYLOAD = msgspec.json.Decoder(tuple[int, str, str, str, int, str])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TicketRejected("malformed_query", 400) from None


class TicketSigner:
    """Issues and verifies tickets with one HMAC secret.

    Args:
        secret: at least `MIN_SECRET_BYTES` bytes.

    Raises:
        ValueError: the secret is too short.
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the ticket secret must be at least {MIN_SECRET_BYTES} bytes")
        self._secret = secret

    def _sign(self, payload: str) -> bytes:
        return hmac.new(self._secret, _DOMAIN + payload.encode("ascii"), hashlib.sha256).digest()

    def issue(self, ticket: Ticket) -> str:
        """The ticket text (URL-safe, no quoting needed)."""
        payload = _b64(
            msgspec.json.encode(
                [
                    TICKET_VERSION,
                    ticket.role,
                    ticket.environment_id,
                    ticket.registration_id,
                    ticket.expires_at,
                    ticket.nonce,
                ]
            )
        )
        return f"{payload}.{_b64(self._sign(payload))}"

    def verify(self, text: str, *, role: Role, now: float) -> Ticket:
        """The ticket `text` grants, checked for `role` at time `now`.

        Raises:
            TicketRejected: malformed (`malformed_query`, 400), not signed with our secret
                (`invalid_signature`, 401), another version (`missing_version`, 400), another
                role (`invalid_role`, 403) or expired (`expired`, 401).
        """
        if len(text) > _MAX_TICKET_CHARS or text.count(".") != 1:
            raise TicketRejected("malformed_query", 400)
        payload, signature = text.split(".")
        if not payload.isascii() or not signature.isascii():
            raise TicketRejected("malformed_query", 400)
        if not hmac.compare_digest(_unb64(signature), self._sign(payload)):
            raise TicketRejected("invalid_signature", 401)
        try:
            version, ticket_role, environment_id, registration_id, expires_at, nonce = (
                _PAYLOAD.decode(_unb64(payload))
            )
        except msgspec.DecodeError:
            raise TicketRejected("malformed_query", 400) from None
        if version != TICKET_VERSION:
            raise TicketRejected("missing_version", 400)
        if ticket_role != role:
            raise TicketRejected("invalid_role", 403)
        if expires_at <= now:
            raise TicketRejected("expired", 401)
        return Ticket(role, environment_id, registration_id, expires_at, nonce)


def load_secret_file(path: Path) -> bytes:
    """The secret in `path` (its bytes, trailing whitespace removed). Does file I/O.

    Raises:
        OSError: the file cannot be read.
        ValueError: it holds fewer than `MIN_SECRET_BYTES` bytes.
    """
    secret = path.read_bytes().rstrip()
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"{path}: the ticket secret must be at least {MIN_SECRET_BYTES} bytes")
    return secret


def state_dir_secret(state_dir: Path) -> bytes:
    """The secret kept in `state_dir`, created (random, mode 0600) on first use. Does file I/O.

    Raises:
        OSError: the directory or file cannot be created or read.
        ValueError: an existing file is too short.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / SECRET_FILE_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_secret_file(path)
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(32) + "\n")
    return load_secret_file(path)


def new_nonce() -> str:
    """A random nonce for a use-once ticket."""
    return secrets.token_urlsafe(16)


def nonce_claim_key(nonce: str) -> str:
    """The state key that claims a use-once ticket's nonce (its digest)."""
    return "ticket." + hashlib.sha256(nonce.encode()).hexdigest()


__all__ = [
    "EXECUTOR",
    "HARNESS",
    "MIN_SECRET_BYTES",
    "TICKET_VERSION",
    "Role",
    "Ticket",
    "TicketRejected",
    "TicketSigner",
    "load_secret_file",
    "new_nonce",
    "nonce_claim_key",
    "state_dir_secret",
]
