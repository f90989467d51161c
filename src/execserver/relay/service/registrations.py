"""The registry's transitions over `RelayState`: register, attach/detach an executor socket,
wait for an attachment, issue and validate connect authorizations.

Each registration write is a read followed by a compare-and-swap, retried a few times when
another writer got there first; none ever overwrites a registration it did not read.
Authorizations are random strings handed to the harness once; the state keeps only their
digest, bound to the environment, the registration and the harness key's fingerprint, and
`/validate` consumes them atomically (single use, even when the answer is no).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from execserver.relay.api import NoisePublicKey
from execserver.relay.service.defaults import AUTHORIZATION_TTL_S
from execserver.relay.service.nodes import Nodes, SingleNode
from execserver.relay.service.overload import Overloaded
from execserver.relay.service.state import (
    Attachment,
    Authorization,
    Entry,
    Registration,
    RelayState,
    RevisionConflict,
    StateUnavailable,
)
from execserver.relay.service.tickets import new_nonce, nonce_claim_key

CAS_ATTEMPTS: Final = 8
AUTHORIZE_ATTEMPTS: Final = 3
"""Authorization writes tried, each under a fresh key, when the state cannot answer (a
fleet's key lanes: another lane may have a leader while one elects)."""
KEY_DRAWS: Final = 16
"""Random keys drawn at most to find one the state can use now (`RelayState.usable_key`)."""
CLAIM_GRACE_S: Final = 10.0
"""How long a new registration that has not attached yet still holds its environment against an
executor with another key (the time an executor takes from `/register` to its socket)."""


class EnvironmentInUse(Exception):
    """Another executor (another key) holds the environment: it won a concurrent registration,
    or it replaced this one and is connected (or about to be)."""

    def __init__(self, environment_id: str, *, concurrent: bool) -> None:
        self.environment_id = environment_id
        self.concurrent = concurrent
        if concurrent:
            message = (
                f"another executor registered environment `{environment_id}` at the same moment "
                "and won; one executor per environment id"
            )
        else:
            message = (
                f"environment `{environment_id}` was taken over by a newer executor that is "
                "connected; stop one of the two, or give them different environment ids"
            )
        super().__init__(message)


def fingerprint(key: NoisePublicKey) -> str:
    """SHA-256 (hex) of the suite and both raw key halves: equal iff the keys are equal."""
    digest = hashlib.sha256()
    for part in (key.suite.encode(), key.x25519_public_key, key.mlkem768_public_key):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def authorization_key(authorization: str) -> str:
    """The state key of an authorization string (its digest; the string is never stored)."""
    return "auth." + hashlib.sha256(authorization.encode()).hexdigest()


def new_registration_id() -> str:
    return "reg_" + secrets.token_urlsafe(18)


def new_connection_id() -> str:
    return "conn_" + secrets.token_hex(8)


class Validation(enum.Enum):
    """The outcome of `/validate` (only VALID answers `{"valid": true}`)."""

    VALID = "valid"
    UNKNOWN = "unknown"
    """Never issued, already used, or expired."""
    WRONG_REGISTRATION = "wrong_registration"
    WRONG_KEY = "wrong_key"
    STALE_REGISTRATION = "stale_registration"
    """The registration it was issued for has been replaced."""


class Registrations:
    """The control plane of one relay node.

    Args:
        state: the shared state.
        node_id: this node's id (recorded in attachments).
        nodes: which nodes are alive (an attachment on a dead node is no attachment).
        authorization_ttl_s: lifetime of a connect authorization.
        clock: the time source, UNIX seconds.
    """

    def __init__(
        self,
        state: RelayState,
        *,
        node_id: str,
        nodes: Nodes | None = None,
        authorization_ttl_s: float = AUTHORIZATION_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.node_id = node_id
        self.nodes: Nodes = nodes or SingleNode(node_id)
        self._authorization_ttl_s = authorization_ttl_s
        self._clock = clock

    def attached(self, registration: Registration) -> bool:
        """Whether an executor socket on a live node carries `registration`."""
        attachment = registration.attachment
        return attachment is not None and self.nodes.alive(attachment.node_id)

    def _held_against(self, current: Registration, key: str) -> bool:
        """Whether `current` keeps the executor with key fingerprint `key` out: it is the
        executor `current` replaced, and `current`'s executor is connected or on its way."""
        if key != current.replaced_key:
            return False
        if self.attached(current):
            return True
        return not current.ever_attached and self._clock() - current.registered_at < CLAIM_GRACE_S

    async def register(self, environment_id: str, key: NoisePublicKey) -> Registration:
        """A new registration of the environment for `key`, replacing the previous one (the
        newest executor wins), with two exceptions that end a fight between two live
        executors over one environment id: of two concurrent registrations exactly one
        commits, and an executor that was replaced may not take the environment back while
        its replacement is connected (or on its way).

        Raises:
            EnvironmentInUse: the exceptions above.
            RevisionConflict: other writers kept winning.
            StateUnavailable: the state cannot answer.

        Cancellation: the registration may or may not have been stored.
        """
        key_digest = fingerprint(key)
        read: str | None = None
        for _ in range(CAS_ATTEMPTS):
            current = await self.state.get_registration(environment_id)
            replaced = "" if current is None else fingerprint(current.value.executor_public_key)
            if current is not None:
                if (
                    read is not None
                    and current.value.registration_id != read
                    and replaced != key_digest
                ):
                    # Another executor's registration committed between our read and write.
                    raise EnvironmentInUse(environment_id, concurrent=True)
                if self._held_against(current.value, key_digest):
                    raise EnvironmentInUse(environment_id, concurrent=False)
            read = "" if current is None else current.value.registration_id
            registration = Registration(
                environment_id=environment_id,
                registration_id=new_registration_id(),
                executor_public_key=key,
                epoch=1 if current is None else current.value.epoch + 1,
                registered_at=self._clock(),
                replaced_key="" if replaced == key_digest else replaced,
            )
            try:
                entry = await self.state.put_registration(
                    registration, expected_revision=None if current is None else current.revision
                )
            except RevisionConflict:
                continue
            return entry.value
        raise RevisionConflict(environment_id)

    async def attach(self, environment_id: str, registration_id: str, connection_id: str) -> bool:
        """Record that socket `connection_id` on this node now carries the registration.

        Returns:
            False when the registration is gone or replaced.

        Raises:
            RevisionConflict: other writers kept winning.
            StateUnavailable: the state cannot answer.

        Cancellation: the attachment may or may not have been recorded.
        """
        for _ in range(CAS_ATTEMPTS):
            current = await self.state.get_registration(environment_id)
            if current is None or current.value.registration_id != registration_id:
                return False
            attachment = Attachment(self.node_id, connection_id, self._clock())
            try:
                await self.state.put_registration(
                    replace(current.value, attachment=attachment, ever_attached=True),
                    expected_revision=current.revision,
                )
            except RevisionConflict:
                continue
            return True
        raise RevisionConflict(environment_id)

    async def detach(self, environment_id: str, registration_id: str, connection_id: str) -> None:
        """Clear the attachment if it is still `connection_id`'s (a newer socket's is kept).

        Raises:
            StateUnavailable: the state cannot answer.

        Cancellation: the attachment may or may not have been cleared.
        """
        for _ in range(CAS_ATTEMPTS):
            current = await self.state.get_registration(environment_id)
            if (
                current is None
                or current.value.registration_id != registration_id
                or current.value.attachment is None
                or current.value.attachment.connection_id != connection_id
            ):
                return
            try:
                await self.state.put_registration(
                    replace(current.value, attachment=None), expected_revision=current.revision
                )
            except RevisionConflict:
                continue
            return

    async def wait_attached(self, environment_id: str, timeout: float) -> Registration | None:
        """The environment's registration once an executor socket carries it, or as it is
        after `timeout` seconds (None: still no registration). Waiting for a registration
        to appear too makes a harness that starts together with its executor work: codex
        does not retry a failed `/connect`.

        Raises:
            StateUnavailable: the state cannot answer.

        Cancellation: safe.
        """
        changed = asyncio.Event()

        def listener(changed_id: str, _entry: Entry[Registration] | None) -> None:
            if changed_id == environment_id:
                changed.set()

        unsubscribe = self.state.subscribe(listener)
        unsubscribe_nodes = self.nodes.subscribe(lambda _node, _alive: changed.set())
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                changed.clear()
                entry = await self.state.get_registration(environment_id)
                if entry is not None and self.attached(entry.value):
                    return entry.value
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None if entry is None else entry.value
                try:
                    async with asyncio.timeout(remaining):
                        await changed.wait()
                except TimeoutError:
                    pass
        finally:
            unsubscribe()
            unsubscribe_nodes()

    def _usable(self, draw: Callable[[], str], key_of: Callable[[str], str]) -> str:
        """A value from `draw` whose state key the state can use now (the last one drawn
        when none of `KEY_DRAWS` is)."""
        value = draw()
        for _ in range(KEY_DRAWS - 1):
            if self.state.usable_key(key_of(value)):
                break
            value = draw()
        return value

    def new_ticket_nonce(self) -> str:
        """A nonce for a harness ticket whose claim the state can store now."""
        return self._usable(new_nonce, nonce_claim_key)

    async def authorize(self, registration: Registration, harness_key: NoisePublicKey) -> str:
        """A new single-use authorization for `harness_key` to reach `registration`, under a
        key the state can use now; when the write fails, again under another key (a fleet
        spreads keys over buckets led by different NATS servers), except when the node is
        overloaded.

        Raises:
            StateUnavailable: the state cannot answer or holds too many.

        Cancellation: the authorization may or may not have been stored.
        """
        grant = Authorization(
            environment_id=registration.environment_id,
            registration_id=registration.registration_id,
            harness_key_digest=fingerprint(harness_key),
            expires_at=self._clock() + self._authorization_ttl_s,
        )
        for attempt in range(AUTHORIZE_ATTEMPTS):
            authorization = self._usable(
                lambda: "hka_" + secrets.token_urlsafe(32), authorization_key
            )
            try:
                await self.state.issue_authorization(authorization_key(authorization), grant)
            except Overloaded:
                raise
            except StateUnavailable:
                if attempt == AUTHORIZE_ATTEMPTS - 1:
                    raise
                continue
            return authorization
        raise AssertionError("unreachable")

    async def validate(
        self,
        environment_id: str,
        registration_id: str,
        harness_key: NoisePublicKey,
        authorization: str,
    ) -> Validation:
        """Consume `authorization` and say whether it was issued for exactly this
        environment, registration and harness key (and that registration is current).

        Raises:
            StateUnavailable: the state cannot answer.

        Cancellation: the authorization may have been consumed.
        """
        granted = await self.state.consume_authorization(authorization_key(authorization))
        if granted is None:
            return Validation.UNKNOWN
        if granted.environment_id != environment_id or granted.registration_id != registration_id:
            return Validation.WRONG_REGISTRATION
        if not secrets.compare_digest(granted.harness_key_digest, fingerprint(harness_key)):
            return Validation.WRONG_KEY
        current = await self.state.get_registration(environment_id)
        if current is None or current.value.registration_id != registration_id:
            return Validation.STALE_REGISTRATION
        return Validation.VALID


__all__ = [
    "AUTHORIZATION_TTL_S",
    "AUTHORIZE_ATTEMPTS",
    "CAS_ATTEMPTS",
    "CLAIM_GRACE_S",
    "KEY_DRAWS",
    "EnvironmentInUse",
    "Registrations",
    "Validation",
    "authorization_key",
    "fingerprint",
    "new_connection_id",
    "new_registration_id",
]
