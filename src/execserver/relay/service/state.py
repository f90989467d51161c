"""The relay's shared state, behind one interface (`RelayState`): registrations, connect
authorizations and use-once keys.

Every registration write is a compare-and-swap on the entry's revision, so a stale writer can
never overwrite a newer registration; authorizations are consumed atomically. The interface is
shaped for a key-value store with revisions (NATS JetStream KV: `create`, `update(last=rev)`,
`delete(last=rev)`, a watcher); `memory_state.MemoryRelayState` is the one-process
implementation. Records are plain values; no secret is ever stored in clear (authorizations
and ticket nonces are keyed by a digest).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from execserver.relay.api import NoisePublicKey

T = TypeVar("T")


class StateError(Exception):
    """Base of the state errors."""


class RevisionConflict(StateError):
    """A compare-and-swap lost: the entry changed (or appeared) since it was read."""


class StateUnavailable(StateError):
    """The backing store cannot answer now (the caller answers 503 and the client retries)."""


@dataclass(frozen=True, slots=True)
class Entry(Generic[T]):
    """A stored value and the revision it was stored at (the compare-and-swap token)."""

    value: T
    revision: int


@dataclass(frozen=True, slots=True)
class Attachment:
    """The executor WebSocket currently carrying a registration."""

    node_id: str
    """The relay node holding the socket."""
    connection_id: str
    """Unique per socket: a reconnect of the same registration is a new attachment."""
    attached_at: float


@dataclass(frozen=True, slots=True)
class Registration:
    """One executor's registration of an environment (at most one per environment)."""

    environment_id: str
    registration_id: str
    executor_public_key: NoisePublicKey
    epoch: int
    """1 for the first registration of the environment, +1 for each replacement."""
    registered_at: float
    attachment: Attachment | None = None
    ever_attached: bool = False
    """Whether an executor socket has carried it (a registration that never attached is an
    executor on its way to the rendezvous)."""
    replaced_key: str = ""
    """Fingerprint of the executor key of the registration this one replaced ("" if none or
    the same key): that executor may not take the environment back while this one holds it."""


@dataclass(frozen=True, slots=True)
class Authorization:
    """What a `harness_key_authorization` issued by `/connect` allows (stored under the
    digest of the authorization string, never the string)."""

    environment_id: str
    registration_id: str
    harness_key_digest: str
    """`fingerprint()` of the harness public key it was issued for."""
    expires_at: float


RegistrationListener = Callable[[str, "Entry[Registration] | None"], None]
"""Called with (environment id, new entry or None when deleted) after each committed
change. It must not block; it runs on the event loop."""


class RelayState(Protocol):
    """Shared state of one relay (or of every node of a fleet).

    Times are UNIX seconds (`time.time()`). Implementations raise `StateUnavailable` when the
    store cannot answer, and nothing else but the errors named below.
    """

    async def get_registration(self, environment_id: str) -> Entry[Registration] | None:
        """The environment's registration, or None.

        Cancellation: safe; nothing changes.
        """
        ...

    async def put_registration(
        self, registration: Registration, *, expected_revision: int | None
    ) -> Entry[Registration]:
        """Store `registration` under its environment if the entry is still at
        `expected_revision` (None: only if there is no entry), and notify the listeners.

        Raises:
            RevisionConflict: the entry is not at `expected_revision`.

        Cancellation: the write may or may not have happened; read again to know.
        """
        ...

    async def delete_registration(self, environment_id: str, *, expected_revision: int) -> None:
        """Remove the environment's registration if it is still at `expected_revision`.

        Raises:
            RevisionConflict: the entry is gone or not at `expected_revision`.

        Cancellation: the delete may or may not have happened.
        """
        ...

    async def count_registrations(self) -> int:
        """How many environments are registered (for metrics).

        Cancellation: safe.
        """
        ...

    def subscribe(self, listener: RegistrationListener) -> Callable[[], None]:
        """Call `listener` after every committed registration change, from now on, until the
        returned function is called."""
        ...

    async def issue_authorization(self, key: str, authorization: Authorization) -> None:
        """Store `authorization` under `key` until it expires.

        Raises:
            StateUnavailable: also when too many authorizations are live.

        Cancellation: the authorization may or may not be stored (it expires either way).
        """
        ...

    async def consume_authorization(self, key: str) -> Authorization | None:
        """Remove and return the authorization under `key`, atomically: of concurrent
        callers at most one gets it. None when absent or expired.

        Cancellation: the authorization may have been consumed.
        """
        ...

    async def claim_once(self, key: str, expires_at: float) -> bool:
        """True the first time `key` is claimed before `expires_at`; False afterwards.

        Cancellation: the key may have been claimed.
        """
        ...

    def usable_key(self, key: str) -> bool:
        """Whether an authorization or claim stored under `key` now would go to a part of the
        store that answers (a fleet spreads them over buckets led by different NATS servers;
        the caller picks another random key when not). Cheap; no I/O."""
        ...

    async def aclose(self) -> None:
        """Release the store (connections, files).

        Cancellation: the store is released anyway.
        """
        ...


__all__ = [
    "Attachment",
    "Authorization",
    "Entry",
    "Registration",
    "RegistrationListener",
    "RelayState",
    "RevisionConflict",
    "StateError",
    "StateUnavailable",
]
