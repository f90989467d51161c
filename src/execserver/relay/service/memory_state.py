"""`MemoryRelayState`: the relay state of a single process, optionally snapshotted to disk.

Everything lives in dicts guarded by the event loop (no await between a check and its write,
which makes each operation atomic). With a snapshot path, registrations (not attachments,
authorizations or nonces) are written to a JSON file on every change and read back at
start, so a restarted relay still knows the registrations its tickets name. The file
is replaced atomically (write + rename); it holds public keys and ids only, no secret.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import msgspec

from execserver.relay.api import NoisePublicKey
from execserver.relay.api import decode as api_decode
from execserver.relay.api import encode as api_encode
from execserver.relay.service.state import (
    Authorization,
    Entry,
    Registration,
    RegistrationListener,
    RevisionConflict,
    StateUnavailable,
)

log = logging.getLogger(__name__)
V = TypeVar("V")

MAX_LIVE_AUTHORIZATIONS = 65_536
"""Past this many unexpired authorizations `/connect` answers 503 (memory stays bounded)."""
MAX_LIVE_CLAIMS = 65_536
SNAPSHOT_VERSION = 1


class _SnapshotRegistration(msgspec.Struct, frozen=True):
    environment_id: str
    registration_id: str
    executor_public_key: NoisePublicKey
    epoch: int
    registered_at: float


class _Snapshot(msgspec.Struct, frozen=True):
    version: int
    revision: int
    registrations: list[_SnapshotRegistration]


class MemoryRelayState:
    """`RelayState` in this process's memory. No operation awaits, so none is ever split by a
    cancellation: each either happened completely or not at all.

    Args:
        snapshot_path: where registrations are persisted (None: nowhere).
        clock: the time source, UNIX seconds.
    """

    def __init__(
        self, *, snapshot_path: Path | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        self._snapshot_path = snapshot_path
        self._revision = 0
        self._registrations: dict[str, Entry[Registration]] = {}
        self._authorizations: dict[str, Authorization] = {}
        self._claims: dict[str, float] = {}
        self._listeners: list[RegistrationListener] = []
        if snapshot_path is not None:
            self._load(snapshot_path)

    # --- registrations ------------------------------------------------------------------------

    async def get_registration(self, environment_id: str) -> Entry[Registration] | None:
        return self._registrations.get(environment_id)

    async def put_registration(
        self, registration: Registration, *, expected_revision: int | None
    ) -> Entry[Registration]:
        environment_id = registration.environment_id
        current = self._registrations.get(environment_id)
        if (None if current is None else current.revision) != expected_revision:
            raise RevisionConflict(environment_id)
        entry = Entry(registration, self._revision + 1)
        self._save({**self._registrations, environment_id: entry}, entry.revision)
        self._revision = entry.revision
        self._registrations[environment_id] = entry
        self._notify(environment_id, entry)
        return entry

    async def delete_registration(self, environment_id: str, *, expected_revision: int) -> None:
        current = self._registrations.get(environment_id)
        if current is None or current.revision != expected_revision:
            raise RevisionConflict(environment_id)
        remaining = {k: v for k, v in self._registrations.items() if k != environment_id}
        self._save(remaining, self._revision + 1)
        self._revision += 1
        self._registrations = remaining
        self._notify(environment_id, None)

    async def count_registrations(self) -> int:
        return len(self._registrations)

    def subscribe(self, listener: RegistrationListener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def _notify(self, environment_id: str, entry: Entry[Registration] | None) -> None:
        for listener in list(self._listeners):
            try:
                listener(environment_id, entry)
            except Exception:
                log.exception("registration listener failed")

    # --- authorizations and claims ------------------------------------------------------------

    async def issue_authorization(self, key: str, authorization: Authorization) -> None:
        _purge(self._authorizations, self._clock(), lambda a: a.expires_at)
        if len(self._authorizations) >= MAX_LIVE_AUTHORIZATIONS:
            raise StateUnavailable("too many live authorizations")
        self._authorizations[key] = authorization

    async def consume_authorization(self, key: str) -> Authorization | None:
        authorization = self._authorizations.pop(key, None)
        if authorization is None or authorization.expires_at <= self._clock():
            return None
        return authorization

    def usable_key(self, key: str) -> bool:
        return True

    async def claim_once(self, key: str, expires_at: float) -> bool:
        now = self._clock()
        _purge(self._claims, now, lambda expiry: expiry)
        if key in self._claims or expires_at <= now:
            return False
        if len(self._claims) >= MAX_LIVE_CLAIMS:
            raise StateUnavailable("too many live claims")
        self._claims[key] = expires_at
        return True

    async def aclose(self) -> None:
        self._listeners.clear()

    # --- snapshot -----------------------------------------------------------------------------

    def _load(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        snapshot = api_decode(data, _Snapshot)
        if snapshot.version != SNAPSHOT_VERSION:
            raise ValueError(f"{path}: unsupported snapshot version {snapshot.version}")
        self._revision = snapshot.revision
        for item in snapshot.registrations:
            # Sockets did not survive the restart: every registration starts detached, at a
            # revision no writer from before the restart can hold.
            self._revision += 1
            registration = Registration(
                item.environment_id,
                item.registration_id,
                item.executor_public_key,
                item.epoch,
                item.registered_at,
            )
            self._registrations[item.environment_id] = Entry(registration, self._revision)

    def _save(self, registrations: dict[str, Entry[Registration]], revision: int) -> None:
        if self._snapshot_path is None:
            return
        snapshot = _Snapshot(
            SNAPSHOT_VERSION,
            revision,
            [
                _SnapshotRegistration(
                    entry.value.environment_id,
                    entry.value.registration_id,
                    entry.value.executor_public_key,
                    entry.value.epoch,
                    entry.value.registered_at,
                )
                for entry in registrations.values()
            ],
        )
        temporary = self._snapshot_path.with_name(self._snapshot_path.name + ".tmp")
        try:
            # Small file, rare writes (one per registration): written synchronously so that a
            # cancelled caller can never leave memory and file disagreeing.
            temporary.write_bytes(api_encode(snapshot))
            os.replace(temporary, self._snapshot_path)
        except OSError as exc:
            raise StateUnavailable(f"cannot write the registration snapshot: {exc}") from None


def _purge(items: dict[str, V], now: float, expiry: Callable[[V], float]) -> None:
    """Drop expired items from the front (insertion order is close to expiry order, as each
    kind of item has one lifetime); stops at the first live one."""
    while items:
        key = next(iter(items))
        if expiry(items[key]) > now:
            return
        del items[key]


__all__ = ["MAX_LIVE_AUTHORIZATIONS", "MAX_LIVE_CLAIMS", "MemoryRelayState"]
