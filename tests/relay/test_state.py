"""`MemoryRelayState` (compare-and-swap, single-use, expiry, snapshot) and the registry's
transitions over it (`Registrations`)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest

from execserver.relay.service import memory_state
from execserver.relay.service.memory_state import MemoryRelayState
from execserver.relay.service.registrations import (
    Registrations,
    Validation,
    authorization_key,
    fingerprint,
)
from execserver.relay.service.state import (
    Attachment,
    Authorization,
    Entry,
    Registration,
    RevisionConflict,
    StateUnavailable,
)
from tests.conftest import TIME
from tests.relay.support import FakeClock, fake_key

KEY = fake_key()


def registration(environment_id: str = "e", registration_id: str = "reg_1") -> Registration:
    return Registration(environment_id, registration_id, KEY, epoch=1, registered_at=0.0)


async def test_state_put_is_compare_and_swap() -> None:
    """Create needs no entry; an update needs the current revision; stale writers lose."""
    state = MemoryRelayState()
    first = await state.put_registration(registration(), expected_revision=None)
    with pytest.raises(RevisionConflict):
        await state.put_registration(registration(registration_id="reg_x"), expected_revision=None)
    second = await state.put_registration(
        registration(registration_id="reg_2"), expected_revision=first.revision
    )
    assert second.revision > first.revision
    with pytest.raises(RevisionConflict):  # a writer that read `first` is stale now
        await state.put_registration(
            registration(registration_id="reg_stale"), expected_revision=first.revision
        )
    assert await state.get_registration("e") == second
    assert await state.count_registrations() == 1
    with pytest.raises(RevisionConflict):
        await state.delete_registration("e", expected_revision=first.revision)
    await state.delete_registration("e", expected_revision=second.revision)
    assert await state.get_registration("e") is None


async def test_state_listeners_see_every_committed_change() -> None:
    """Listeners get (environment, entry or None) after each change until unsubscribed."""
    state = MemoryRelayState()
    seen: list[tuple[str, Entry[Registration] | None]] = []
    unsubscribe = state.subscribe(lambda env, entry: seen.append((env, entry)))
    state.subscribe(lambda env, entry: 1 / 0)  # a failing listener does not stop the others
    entry = await state.put_registration(registration(), expected_revision=None)
    with pytest.raises(RevisionConflict):
        await state.put_registration(registration(), expected_revision=None)
    await state.delete_registration("e", expected_revision=entry.revision)
    unsubscribe()
    await state.put_registration(registration(), expected_revision=None)
    assert seen == [("e", entry), ("e", None)]


async def test_state_authorizations_are_single_use_and_expire() -> None:
    """consume returns an authorization once; expired ones are gone."""
    clock = FakeClock()
    state = MemoryRelayState(clock=clock)
    grant = Authorization("e", "reg_1", "digest", clock.now + 60)
    await state.issue_authorization("k", grant)
    assert await state.consume_authorization("k") == grant
    assert await state.consume_authorization("k") is None
    await state.issue_authorization("k2", grant)
    clock.advance(60)
    assert await state.consume_authorization("k2") is None


async def test_state_authorizations_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the cap of live authorizations issuing fails (503 upstream); expired ones free it."""
    monkeypatch.setattr(memory_state, "MAX_LIVE_AUTHORIZATIONS", 3)
    clock = FakeClock()
    state = MemoryRelayState(clock=clock)
    for index in range(3):
        await state.issue_authorization(f"k{index}", Authorization("e", "r", "d", clock.now + 1))
    with pytest.raises(StateUnavailable):
        await state.issue_authorization("k3", Authorization("e", "r", "d", clock.now + 1))
    clock.advance(1)
    await state.issue_authorization("k3", Authorization("e", "r", "d", clock.now + 1))


async def test_state_claim_once() -> None:
    """A key is claimed once until it expires; an already expired claim fails."""
    clock = FakeClock()
    state = MemoryRelayState(clock=clock)
    assert await state.claim_once("n", clock.now + 10)
    assert not await state.claim_once("n", clock.now + 10)
    assert not await state.claim_once("old", clock.now)
    clock.advance(10)
    assert await state.claim_once("n", clock.now + 10)


async def test_state_snapshot_survives_a_restart(tmp_path: Path) -> None:
    """Registrations (not attachments) are written to the snapshot and read back."""
    path = tmp_path / "registrations.json"
    state = MemoryRelayState(snapshot_path=path)
    entry = await state.put_registration(registration(), expected_revision=None)
    attached = await state.put_registration(
        replace(entry.value, attachment=Attachment("node", "conn", 1.0)),
        expected_revision=entry.revision,
    )
    text = path.read_text()
    assert "reg_1" in text
    assert "conn" not in text
    restarted = MemoryRelayState(snapshot_path=path)
    loaded = await restarted.get_registration("e")
    assert loaded is not None
    assert loaded.value == entry.value  # detached
    # Loaded entries get revisions no writer from before the restart can hold.
    assert loaded.revision > attached.revision
    for stale in (entry.revision, attached.revision):
        with pytest.raises(RevisionConflict):
            await restarted.put_registration(registration(), expected_revision=stale)
    await restarted.put_registration(registration(), expected_revision=loaded.revision)
    assert json.loads(path.read_text())["version"] == 1


async def test_state_snapshot_write_failure_changes_nothing(tmp_path: Path) -> None:
    """When the snapshot cannot be written the put fails and memory keeps the old entry."""
    path = tmp_path / "dir" / "registrations.json"
    state = MemoryRelayState(snapshot_path=path)  # its directory does not exist
    with pytest.raises(StateUnavailable):
        await state.put_registration(registration(), expected_revision=None)
    assert await state.get_registration("e") is None


# --- Registrations ------------------------------------------------------------------------------


async def test_registrations_register_replaces_and_counts_epochs() -> None:
    """Each register makes a new opaque id; the epoch grows; the old one is gone."""
    registrations = Registrations(MemoryRelayState(), node_id="n1")
    first = await registrations.register("e", KEY)
    second = await registrations.register("e", KEY)
    assert first.registration_id.startswith("reg_")
    assert first.registration_id != second.registration_id
    assert (first.epoch, second.epoch) == (1, 2)
    current = await registrations.state.get_registration("e")
    assert current is not None
    assert current.value == second


async def test_registrations_attach_and_detach_are_per_socket() -> None:
    """Attach needs the current registration; detaching an old socket keeps a newer one's."""
    registrations = Registrations(MemoryRelayState(), node_id="n1")
    first = await registrations.register("e", KEY)
    assert await registrations.attach("e", first.registration_id, "conn_a")
    assert await registrations.attach("e", first.registration_id, "conn_b")
    await registrations.detach("e", first.registration_id, "conn_a")
    entry = await registrations.state.get_registration("e")
    assert entry is not None
    assert entry.value.attachment is not None
    assert entry.value.attachment.connection_id == "conn_b"
    await registrations.detach("e", first.registration_id, "conn_b")
    entry = await registrations.state.get_registration("e")
    assert entry is not None
    assert entry.value.attachment is None
    await registrations.register("e", KEY)
    assert not await registrations.attach("e", first.registration_id, "conn_c")
    assert not await registrations.attach("unknown", "reg_x", "conn_d")


async def test_registrations_wait_attached_wakes_on_attach() -> None:
    """wait_attached returns as soon as a socket attaches, also for a new registration."""
    registrations = Registrations(MemoryRelayState(), node_id="n1")
    waiter = asyncio.ensure_future(registrations.wait_attached("e", 10 * TIME))
    await asyncio.sleep(0)
    registration_ = await registrations.register("e", KEY)
    await asyncio.sleep(0)
    assert not waiter.done()
    await registrations.attach("e", registration_.registration_id, "conn")
    attached = await asyncio.wait_for(waiter, 5 * TIME)
    assert attached is not None
    assert attached.attachment is not None


async def test_registrations_wait_attached_times_out() -> None:
    """Without an executor the wait ends at the timeout: None, or the detached registration."""
    registrations = Registrations(MemoryRelayState(), node_id="n1")
    assert await registrations.wait_attached("e", 0.05) is None
    await registrations.register("e", KEY)
    detached = await registrations.wait_attached("e", 0.05)
    assert detached is not None
    assert detached.attachment is None


async def test_registrations_validate_outcomes() -> None:
    """Only the exact environment, registration and key validate, once, before expiry."""
    clock = FakeClock()
    state = MemoryRelayState(clock=clock)
    registrations = Registrations(state, node_id="n1", authorization_ttl_s=60, clock=clock)
    reg = await registrations.register("e", KEY)
    harness = fake_key()

    async def outcome(
        environment_id: str = "e", registration_id: str | None = None, key: object = None
    ) -> Validation:
        authorization = await registrations.authorize(reg, harness)
        return await registrations.validate(
            environment_id,
            registration_id or reg.registration_id,
            key or harness,  # type: ignore[arg-type]
            authorization,
        )

    assert await outcome() is Validation.VALID
    assert await outcome(environment_id="other") is Validation.WRONG_REGISTRATION
    assert await outcome(registration_id="reg_other") is Validation.WRONG_REGISTRATION
    assert await outcome(key=fake_key()) is Validation.WRONG_KEY
    authorization = await registrations.authorize(reg, harness)
    assert await registrations.validate("e", reg.registration_id, harness, authorization) is (
        Validation.VALID
    )
    assert await registrations.validate("e", reg.registration_id, harness, authorization) is (
        Validation.UNKNOWN
    )
    late = await registrations.authorize(reg, harness)
    clock.advance(60)
    assert await registrations.validate("e", reg.registration_id, harness, late) is (
        Validation.UNKNOWN
    )
    stale = await registrations.authorize(reg, harness)
    await registrations.register("e", KEY)
    assert await registrations.validate("e", reg.registration_id, harness, stale) is (
        Validation.STALE_REGISTRATION
    )


async def test_registrations_store_no_secret() -> None:
    """The state holds the authorization's digest and the key's fingerprint, not them."""
    state = MemoryRelayState()
    registrations = Registrations(state, node_id="n1")
    reg = await registrations.register("e", KEY)
    harness = fake_key()
    authorization = await registrations.authorize(reg, harness)
    assert authorization.startswith("hka_")
    assert len(authorization.encode()) <= 4096
    stored = state._authorizations  # the only place authorizations live
    assert list(stored) == [authorization_key(authorization)]
    assert authorization not in repr(stored)
    assert stored[authorization_key(authorization)].harness_key_digest == fingerprint(harness)
    assert fingerprint(harness) != fingerprint(KEY)
