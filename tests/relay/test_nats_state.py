"""`NatsRelayState` on real nats-server processes: the `RelayState` contract (compare-and-swap,
single use, claims, listeners) and what a fleet adds: nodes on different servers of a
three-server cluster race for one registration and one authorization, and exactly one wins."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from execserver.relay.service.nats_state import NatsRelayState, connect_nats
from execserver.relay.service.overload import OperationGate
from execserver.relay.service.state import (
    Authorization,
    Entry,
    Registration,
    RevisionConflict,
    StateUnavailable,
)
from tests.conftest import TIME
from tests.harness.nats import NatsCluster, nats_cluster
from tests.relay.support import FakeClock, fake_key

KEY = fake_key()


def registration(environment_id: str = "env/one", registration_id: str = "reg_1") -> Registration:
    # A `/` in the id: keys encode ids (NATS keys allow fewer characters).
    return Registration(environment_id, registration_id, KEY, epoch=1, registered_at=0.0)


async def open_state(url: str, clock: FakeClock | None = None, replicas: int = 1) -> NatsRelayState:
    nc = await connect_nats([url])
    state = await NatsRelayState.open(
        nc, replicas=replicas, clock=clock or FakeClock(), owns_connection=True
    )
    await asyncio.wait_for(state.synced.wait(), 10 * TIME)
    return state


@pytest.fixture
async def single(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    async with nats_cluster(tmp_path, size=1) as cluster:
        yield cluster


async def test_nats_state_put_is_compare_and_swap(single: NatsCluster) -> None:
    """Create needs no entry; an update needs the current revision; stale writers lose."""
    state = await open_state(single.urls[0])
    try:
        first = await state.put_registration(registration(), expected_revision=None)
        with pytest.raises(RevisionConflict):
            await state.put_registration(registration(registration_id="x"), expected_revision=None)
        second = await state.put_registration(
            registration(registration_id="reg_2"), expected_revision=first.revision
        )
        assert second.revision > first.revision
        with pytest.raises(RevisionConflict):
            await state.put_registration(
                registration(registration_id="stale"), expected_revision=first.revision
            )
        assert await state.get_registration("env/one") == second
        with pytest.raises(RevisionConflict):
            await state.delete_registration("env/one", expected_revision=first.revision)
        await state.delete_registration("env/one", expected_revision=second.revision)
        assert await state.get_registration("env/one") is None
        # A deleted key can be created again.
        again = await state.put_registration(registration(), expected_revision=None)
        assert (await state.get_registration("env/one")) == again
    finally:
        await state.aclose()


async def test_nats_state_listeners_and_count(single: NatsCluster) -> None:
    """Listeners hear every change in order (also those of another node); count follows."""
    a = await open_state(single.urls[0])
    b = await open_state(single.urls[0])
    seen: list[tuple[str, Entry[Registration] | None]] = []
    changed = asyncio.Event()

    def listener(environment_id: str, entry: Entry[Registration] | None) -> None:
        seen.append((environment_id, entry))
        changed.set()

    unsubscribe = a.subscribe(listener)
    try:
        entry = await b.put_registration(registration("e1"), expected_revision=None)
        async with asyncio.timeout(10 * TIME):
            while len(seen) < 1:
                changed.clear()
                await changed.wait()
        assert seen == [("e1", entry)]
        await b.delete_registration("e1", expected_revision=entry.revision)
        async with asyncio.timeout(10 * TIME):
            while len(seen) < 2:
                changed.clear()
                await changed.wait()
        assert seen[1] == ("e1", None)
        assert await a.count_registrations() == 0
    finally:
        unsubscribe()
        await a.aclose()
        await b.aclose()


async def test_nats_state_replay_announces_only_changes(single: NatsCluster) -> None:
    """A watch that starts again (after a NATS outage) replays every stored registration; the
    listeners hear only those that changed since (a node keeps versions, not copies), and a
    node that starts hears them all."""
    writer = await open_state(single.urls[0])
    reader = await open_state(single.urls[0])
    heard: list[tuple[str, Entry[Registration] | None]] = []
    changed = asyncio.Event()

    def listener(environment_id: str, entry: Entry[Registration] | None) -> None:
        heard.append((environment_id, entry))
        changed.set()

    async def hear(count: int) -> None:
        async with asyncio.timeout(10 * TIME):
            while len(heard) < count:
                changed.clear()
                await changed.wait()

    unsubscribe = reader.subscribe(listener)
    try:
        first = await writer.put_registration(registration("e1"), expected_revision=None)
        await writer.put_registration(registration("e2"), expected_revision=None)
        await hear(2)
        assert [env for env, _ in heard] == ["e1", "e2"]
        heard.clear()
        reader.synced.clear()
        reader.rewatch.set()
        await asyncio.wait_for(reader.synced.wait(), 10 * TIME)
        assert heard == [], "a replay repeated unchanged registrations"
        assert await reader.count_registrations() == 2
        await writer.delete_registration("e1", expected_revision=first.revision)
        await hear(1)
        assert heard == [("e1", None)]
        assert await reader.count_registrations() == 1

        nc = await connect_nats([single.urls[0]])
        starting = await NatsRelayState.open(nc, clock=FakeClock(), owns_connection=True)
        replayed: list[tuple[str, Entry[Registration] | None]] = []
        starting.subscribe(lambda env, entry: replayed.append((env, entry)))
        try:
            await asyncio.wait_for(starting.synced.wait(), 10 * TIME)
            assert [env for env, _ in replayed] == ["e2"]
            entry = replayed[0][1]
            assert entry is not None and entry.value == registration("e2")
        finally:
            await starting.aclose()
    finally:
        unsubscribe()
        await reader.aclose()
        await writer.aclose()


async def test_nats_state_authorizations_and_claims(single: NatsCluster) -> None:
    """Authorizations are single use and expire; a claim succeeds once."""
    clock = FakeClock()
    state = await open_state(single.urls[0], clock)
    try:
        grant = Authorization("e", "reg", "digest", expires_at=clock() + 60)
        await state.issue_authorization("k1", grant)
        assert await state.consume_authorization("k1") == grant
        assert await state.consume_authorization("k1") is None
        await state.issue_authorization("k2", grant)
        clock.advance(61)
        assert await state.consume_authorization("k2") is None
        assert await state.claim_once("n1", clock() + 10)
        assert not await state.claim_once("n1", clock() + 10)
        assert not await state.claim_once("n2", clock() - 1)
    finally:
        await state.aclose()


async def test_nats_state_fleet_races_have_one_winner(tmp_path: Path) -> None:
    """Three nodes on three servers (replicated buckets): a registration race and an
    authorization race each have exactly one winner."""
    async with nats_cluster(tmp_path, size=3) as cluster:
        states = [await open_state(url, replicas=3) for url in cluster.urls]
        try:
            outcomes = await asyncio.gather(
                *(
                    state.put_registration(registration("race", f"reg_{i}"), expected_revision=None)
                    for i, state in enumerate(states)
                ),
                return_exceptions=True,
            )
            # Under load a replicated write may time out with no answer (`StateUnavailable`:
            # it may or may not have happened); every other outcome is a win or a lost swap.
            winners = [o for o in outcomes if isinstance(o, Entry)]
            unknown = [i for i, o in enumerate(outcomes) if isinstance(o, StateUnavailable)]
            conflicts = sum(isinstance(o, RevisionConflict) for o in outcomes)
            assert len(winners) + conflicts + len(unknown) == 3, outcomes
            assert len(winners) == 1 or (not winners and unknown), outcomes
            stored = await states[2].get_registration("race")
            assert stored is not None
            if winners:
                assert stored == winners[0]
            else:  # the one that timed out is the one that won
                ids = {f"reg_{i}" for i in unknown}
                assert stored.value.registration_id in ids, (stored, outcomes)
            grant = Authorization("race", "reg", "digest", expires_at=states[0]._clock() + 60)
            await states[0].issue_authorization("once", grant)
            taken = await asyncio.gather(*(s.consume_authorization("once") for s in states))
            assert taken.count(grant) == 1 and taken.count(None) == 2
        finally:
            for state in states:
                await state.aclose()


async def test_nats_state_bounds_operations_in_flight(single: NatsCluster) -> None:
    """Many operations at once on one node: at most the gate's limit reach NATS at a time,
    the others queue, and every one is answered."""
    nc = await connect_nats([single.urls[0]])
    state = await NatsRelayState.open(
        nc, clock=FakeClock(), owns_connection=True, gate=OperationGate(limit=2, max_waiting=64)
    )
    try:
        await state.put_registration(registration(), expected_revision=None)
        entries = await asyncio.gather(*(state.get_registration("env/one") for _ in range(40)))
        assert {entry.value.registration_id for entry in entries if entry} == {"reg_1"}
        assert len(entries) == 40 and all(entries)
        assert state.gate.peak_in_flight == 2
        assert (state.gate.in_flight, state.gate.waiting, state.gate.refused) == (0, 0, 0)
    finally:
        await state.aclose()
