"""Rendezvous tickets: signed, expiring, role-bound; secrets kept across restarts."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from execserver.relay.service.tickets import (
    EXECUTOR,
    HARNESS,
    Ticket,
    TicketRejected,
    TicketSigner,
    load_secret_file,
    state_dir_secret,
)

SECRET = b"s" * 32
NOW = 1_800_000_000.0
TICKET = Ticket(EXECUTOR, "test1", "reg_abc", int(NOW) + 60)


def rejection(text: str, *, role: str = EXECUTOR, signer: TicketSigner | None = None) -> tuple:
    with pytest.raises(TicketRejected) as info:
        (signer or TicketSigner(SECRET)).verify(text, role=role, now=NOW)  # type: ignore[arg-type]
    return info.value.reason, info.value.status


def test_tickets_round_trip() -> None:
    """A ticket verifies for its role before its expiry and is URL-safe."""
    signer = TicketSigner(SECRET)
    text = signer.issue(TICKET)
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    assert signer.verify(text, role=EXECUTOR, now=NOW) == TICKET
    harness = Ticket(HARNESS, "test1", "reg_abc", int(NOW) + 60, "nonce")
    assert signer.verify(signer.issue(harness), role=HARNESS, now=NOW) == harness


def test_tickets_expire() -> None:
    """At and after its expiry a ticket is refused with 401 `expired`."""
    text = TicketSigner(SECRET).issue(TICKET)
    with pytest.raises(TicketRejected) as info:
        TicketSigner(SECRET).verify(text, role=EXECUTOR, now=TICKET.expires_at)
    assert (info.value.reason, info.value.status) == ("expired", 401)


def test_tickets_are_bound_to_their_role() -> None:
    """An executor ticket is no harness ticket (403 `invalid_role`)."""
    assert rejection(TicketSigner(SECRET).issue(TICKET), role=HARNESS) == ("invalid_role", 403)


def test_tickets_forged_or_foreign_are_refused() -> None:
    """Another secret, or any change to the payload, fails the signature (401)."""
    text = TicketSigner(SECRET).issue(TICKET)
    assert rejection(text, signer=TicketSigner(b"t" * 32)) == ("invalid_signature", 401)
    payload, signature = text.split(".")
    forged_payload = base64.urlsafe_b64encode(
        b'[1,"executor","test1","reg_other",9999999999,""]'
    ).decode()
    assert rejection(f"{forged_payload.rstrip('=')}.{signature}") == ("invalid_signature", 401)
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    assert rejection(f"{payload}.{flipped}") == ("invalid_signature", 401)


@pytest.mark.parametrize(
    "text", ["", "nodot", "a.b.c", "é.x", "x" * 5000 + ".y", "!!!.???"], ids=repr
)
def test_tickets_malformed_are_refused(text: str) -> None:
    """Anything not shaped like a ticket is 400 `malformed_query` or a bad signature."""
    assert rejection(text) in (("malformed_query", 400), ("invalid_signature", 401))


def test_tickets_other_version_is_refused() -> None:
    """A correctly signed payload of another version is 400 `missing_version`."""
    signer = TicketSigner(SECRET)
    payload = base64.urlsafe_b64encode(b'[2,"executor","e","r",9999999999,""]').decode()
    payload = payload.rstrip("=")
    text = f"{payload}.{base64.urlsafe_b64encode(signer._sign(payload)).decode().rstrip('=')}"
    assert rejection(text) == ("missing_version", 400)


def test_tickets_secret_must_be_long_enough(tmp_path: Path) -> None:
    """Secrets shorter than 32 bytes are refused, in code and in files."""
    with pytest.raises(ValueError, match="at least 32 bytes"):
        TicketSigner(b"short")
    path = tmp_path / "secret"
    path.write_bytes(b"short\n")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        load_secret_file(path)
    path.write_bytes(b"x" * 40 + b"\n")
    assert load_secret_file(path) == b"x" * 40


def test_tickets_state_dir_secret_is_created_once_and_private(tmp_path: Path) -> None:
    """The state-dir secret is random, mode 0600, and the same on the next start."""
    state = tmp_path / "state"
    first = state_dir_secret(state)
    assert len(first) >= 32
    assert stat.S_IMODE((state / "ticket-secret").stat().st_mode) == 0o600
    assert state_dir_secret(state) == first
    assert state_dir_secret(tmp_path / "other") != first
