"""`NatsRelayState`: the relay state of a fleet, in NATS JetStream key-value buckets.

Three buckets, one revision space each (the stream sequence is the compare-and-swap token):

- `relay_registrations` (history 1, no expiry): `r.<env>` → the registration as JSON, with its
  attachment (which node holds the executor's socket). Create is `create` (fails if present),
  every change an `update(last=revision)`, removal a `delete(last=revision)`: a writer that
  read an old revision always loses. Reads go to the stream's leader; when it does not
  answer within `FAST_TIMEOUT_S` (a server died; the election takes seconds), to any replica
  ("direct get", enabled on the bucket; it may lag a little behind) for `LANE_AVOID_S`.
- `relay_authorizations` (entries expire with the bucket's TTL): `a.<digest>` → the
  authorization; consuming it is `delete(last=revision)`, so of two nodes racing for one
  authorization exactly one wins.
- `relay_claims` (TTL): `c.<digest>` created once; a second `create` fails.

With replicated buckets, authorizations and claims are spread over `TICKET_LANES` lanes
(`relay_authorizations`, `relay_authorizations_1`, …; the same for claims), a key's lane
fixed by its hash, and every node moves lane i's stream leadership to the i-th NATS server
(`spread_leaders`). A server's death then leaves the other lanes writable: JetStream elects
a new leader only after 4-9 s (election timeouts that nats-server does not let one
configure), and a harness's reconnection writes an authorization and a claim. A lane whose
write found no leader is avoided for `LANE_AVOID_S` (`usable_key`); new keys go elsewhere.

A watcher over the registrations keeps a local copy (for counting) and calls the listeners for
every change, from any node, in commit order. Environment ids are base64url-encoded in keys
(NATS keys allow fewer characters than ids). Any NATS failure is `StateUnavailable`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import random
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar, cast

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from execserver.relay.api import NoisePublicKey
from execserver.relay.api import decode as api_decode
from execserver.relay.api import encode as api_encode
from execserver.relay.service.defaults import FIRST_CONNECT_TIMEOUT_S, NATS_CLOSE_FLUSH_S
from execserver.relay.service.overload import OperationGate, Overloaded
from execserver.relay.service.state import (
    Attachment,
    Authorization,
    Entry,
    Registration,
    RegistrationListener,
    RevisionConflict,
    StateUnavailable,
)
from execserver.tasks import TaskOwner

if TYPE_CHECKING:
    from execserver.relay.service.metrics import RelayMetrics

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


RETRY_BUDGET_S: Final = 8.0
"""How long an operation that may be repeated keeps trying: NATS elects a new stream leader
within a few seconds of a server's death (election timeouts of 4-9 s)."""


def _operation(name: str, *, repeatable: bool = False, laned: bool = False) -> Callable[[F], F]:
    """Run each attempt in a slot of the state's `OperationGate` (a storm queues on the node
    instead of timing out in NATS), time each call in the state's metrics
    (`kv_operation_seconds`, the wait for a slot included), and try again, with a
    short backoff, a call that no stream answered (it cannot have happened) or, when
    `repeatable` (a read, or a write whose repetition changes nothing), any failed call: a
    replicated bucket is unavailable for a few seconds while a new leader is elected after a
    server died, and a codex harness does not retry a failed `/connect`. A `laned` call is
    not repeated: its caller picks another lane."""
    retried: tuple[type[Exception], ...] = (
        () if laned else (_Unanswered, StateUnavailable) if repeatable else (_Unanswered,)
    )

    def wrap(method: F) -> F:
        @functools.wraps(method)
        async def timed(self: NatsRelayState, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            deadline = time.monotonic() + RETRY_BUDGET_S
            delay = 0.05
            try:
                while True:
                    try:
                        async with self.gate.slot():
                            return await method(self, *args, **kwargs)
                    except Overloaded:
                        raise  # queueing again here would only make the storm longer
                    except retried:
                        if time.monotonic() + delay > deadline:
                            raise
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 0.5)
            except _Unanswered as exc:
                raise StateUnavailable(f"{name}: no stream answered ({exc.cause!r})") from None
            finally:
                if self._metrics is not None:
                    self._metrics.observe(
                        "kv_operation_seconds", time.perf_counter() - start, operation=name
                    )

        return cast(F, timed)

    return wrap


REGISTRATIONS_BUCKET = "relay_registrations"
AUTHORIZATIONS_BUCKET = "relay_authorizations"
CLAIMS_BUCKET = "relay_claims"
AUTHORIZATIONS_TTL_S = 300.0
"""Bucket expiry of authorizations (each also carries its own, shorter, `expires_at`)."""
CLAIMS_TTL_S = 3600.0
"""Bucket expiry of use-once claims: at least the longest ticket lifetime."""
TICKET_LANES: Final = 3
"""Buckets that authorizations and claims are spread over when replicated (one per server of
a three-server cluster)."""
LANE_AVOID_S: Final = 10.0
"""How long new keys avoid a lane whose operation found no leader (an election: 4-9 s)."""
SPREAD_INTERVAL_S: Final = 10.0
"""How often a node checks that the lanes are led by different servers (jittered)."""
LEADER_PLACEMENT_VERSION: Final = (2, 11, 0)
"""The first nats-server whose leader step-down honours a preferred server."""
REQUEST_TIMEOUT_S = 2.0
FAST_TIMEOUT_S: Final = 1.0
"""How long a registration read waits for the stream's leader, and a write to a lane for
its leader, before the read goes to a replica and the write to another lane: a dead
leader's requests are not refused, they time out (a live one answers in milliseconds; under
CPU pressure in hundreds of them, docs/SCALING.md)."""
BUCKET_SETUP_ATTEMPTS = 8
"""Creating replicated buckets on a cluster that just formed can time out: retried."""

_WRONG_LAST_SEQUENCE = frozenset({10071, 10164})
"""JetStream's error codes for a failed compare-and-swap (`wrong last sequence`; 10164 when
another update of the subject is still in flight), which calls report as a plain
`BadRequestError` rather than `KeyWrongLastSequenceError`."""


class _Unanswered(Exception):
    """No stream answered the request: it was not carried out."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(repr(cause))
        self.cause = cause


def _unanswered(exc: BaseException) -> bool:
    return isinstance(exc, nats.js.errors.NoStreamResponseError | nats.errors.NoRespondersError)


FIXED_CAS_VERSION: Final = (2, 9, 21)
"""The first nats-server whose compare-and-swap on a replicated stream is atomic: before it,
concurrent updates that expect the same revision can all succeed (nats-io/nats-server#4320;
Debian 12 ships 2.9.10)."""


def atomic_replicated_cas(version: str) -> bool:
    """Whether nats-server `version` (`2.10.4`, `2.11.0-beta.1`) has atomic replicated CAS."""
    return _version_at_least(version, FIXED_CAS_VERSION)


def _version_at_least(version: str, wanted: tuple[int, int, int]) -> bool:
    parts = version.split("-", 1)[0].split(".")
    try:
        return tuple(int(part) for part in parts[:3]) >= wanted
    except ValueError:
        return False


def lane_of(key: str, lanes: int) -> int:
    """The lane of an authorization or claim key (the same on every node)."""
    return zlib.crc32(key.encode()) % lanes


def lane_bucket(base: str, lane: int) -> str:
    """The bucket of `lane` of a family (lane 0 keeps the family's name)."""
    return base if lane == 0 else f"{base}_{lane}"


def _lost_swap(exc: BaseException) -> bool:
    return isinstance(exc, nats.js.errors.KeyWrongLastSequenceError) or (
        isinstance(exc, nats.js.errors.APIError)
        and getattr(exc, "err_code", None) in _WRONG_LAST_SEQUENCE
    )


NATS_FAILURES: tuple[type[BaseException], ...] = (
    nats.errors.Error,
    nats.js.errors.Error,
    asyncio.TimeoutError,
    OSError,
)


class _Attachment(msgspec.Struct, frozen=True):
    node_id: str
    connection_id: str
    attached_at: float


class _Registration(msgspec.Struct, frozen=True):
    environment_id: str
    registration_id: str
    executor_public_key: NoisePublicKey
    epoch: int
    registered_at: float
    attachment: _Attachment | None = None
    ever_attached: bool = False
    replaced_key: str = ""


class _Authorization(msgspec.Struct, frozen=True):
    environment_id: str
    registration_id: str
    harness_key_digest: str
    expires_at: float


def _env_key(environment_id: str) -> str:
    encoded = base64.urlsafe_b64encode(environment_id.encode()).rstrip(b"=").decode()
    return f"r.{encoded}"


def _env_of(key: str) -> str:
    encoded = key.removeprefix("r.")
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()


def _encode_registration(registration: Registration) -> bytes:
    attachment = registration.attachment
    return api_encode(
        _Registration(
            registration.environment_id,
            registration.registration_id,
            registration.executor_public_key,
            registration.epoch,
            registration.registered_at,
            None
            if attachment is None
            else _Attachment(attachment.node_id, attachment.connection_id, attachment.attached_at),
            registration.ever_attached,
            registration.replaced_key,
        )
    )


def _decode_registration(data: bytes) -> Registration:
    raw = api_decode(data, _Registration)
    attachment = raw.attachment
    return Registration(
        raw.environment_id,
        raw.registration_id,
        raw.executor_public_key,
        raw.epoch,
        raw.registered_at,
        None
        if attachment is None
        else Attachment(attachment.node_id, attachment.connection_id, attachment.attached_at),
        raw.ever_attached,
        raw.replaced_key,
    )


_Version = tuple[int, int]
"""A stored registration's revision and the hash of its bytes (a revision alone would do, but
a bucket deleted and created again numbers its revisions from 1 again)."""


def _version(update: KeyValue.Entry) -> _Version:
    return (update.revision or 0, hash(update.value))


def _entry(update: KeyValue.Entry) -> Entry[Registration]:
    assert update.value is not None
    return Entry(_decode_registration(update.value), update.revision or 0)


class NatsEvents:
    """What happens to a NATS connection, for whoever must react (the fleet's data plane
    resets what a gap may have lost) or count (metrics). Handlers run on the event loop."""

    def __init__(self) -> None:
        self.disconnected: list[Callable[[], None]] = []
        self.reconnected: list[Callable[[], None]] = []
        self.slow_consumer: list[Callable[[int], None]] = []
        """Called with the subscription id whose messages were dropped."""
        self.disconnects = 0
        self.reconnects = 0
        self.armed = False
        """Set once the first connection is up: failures before it are the caller's error."""
        self.closing = False
        """Set when this side closes the connection (`close_connection`): its end is no loss."""

    async def _on_disconnected(self) -> None:
        if not self.armed:
            return
        if self.closing:
            log.info("NATS connection closed")
            return
        self.disconnects += 1
        log.warning("NATS connection lost")
        _call_all(self.disconnected)

    async def _on_reconnected(self) -> None:
        if not self.armed:
            return
        self.reconnects += 1
        log.info("NATS connection restored")
        _call_all(self.reconnected)

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            log.warning("NATS dropped messages of a slow subscription: %s", exc.subject)
            for handler in list(self.slow_consumer):
                handler(exc.sid)
            return
        log.warning("NATS error: %r", exc)


def _call_all(handlers: list[Callable[[], None]]) -> None:
    for handler in list(handlers):
        try:
            handler()
        except Exception:
            log.exception("NATS event handler failed")


async def connect_nats(
    servers: Sequence[str],
    *,
    name: str = "execserver-relay",
    events: NatsEvents | None = None,
    timeout: float = FIRST_CONNECT_TIMEOUT_S,
) -> NatsClient:
    """A client of the NATS cluster at `servers` that, once connected, reconnects forever on
    its own, reporting to `events`.

    Raises `StateUnavailable` when no server can be reached within `timeout` seconds.
    Cancellation: nothing is left connecting.
    """
    events = events or NatsEvents()
    nc = NatsClient()
    failure: BaseException | None = None

    async def first_failure(exc: Exception) -> None:
        nonlocal failure
        failure = exc

    try:
        async with asyncio.timeout(timeout):
            await nc.connect(
                servers=list(servers),
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,  # type: ignore[arg-type]  # typed int, used as seconds
                connect_timeout=2,
                allow_reconnect=True,
                disconnected_cb=events._on_disconnected,
                reconnected_cb=events._on_reconnected,
                error_cb=first_failure,
            )
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await asyncio.shield(nc.close())
        if isinstance(exc, asyncio.CancelledError) and not isinstance(exc, TimeoutError):
            raise
        cause = failure or exc
        raise StateUnavailable(
            f"cannot reach NATS at {', '.join(servers)}: {cause or type(cause).__name__}"
        ) from None
    nc._error_cb = events._on_error
    events.armed = True
    return nc


async def close_connection(nc: NatsClient, events: NatsEvents | None = None) -> None:
    """Wait until the server has what this connection published (a flush: its answer to a
    ping), at most `NATS_CLOSE_FLUSH_S`, then close; if the flush fails, say so. `events`:
    the connection's (its end is then logged as a close, not a loss).

    Not nats-py's `drain()`: it also waits for every subscription's pending messages (up to
    its drain timeout, 30 s by default), swallows a cancellation and then flushes for up to
    10 s more, per connection; a node whose NATS server hung took 27 s to exit on SIGTERM
    (tests/relay/test_cli.py). At shutdown only the publishes matter (the resets that tell
    other nodes a stream is gone).
    Cancellation: the connection is closed anyway.
    """
    if events is not None:
        events.closing = True
    try:
        await nc.flush(timeout=NATS_CLOSE_FLUSH_S)
    except Exception as exc:
        log.warning("NATS connection: publishes not confirmed (%r); closing it", exc)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(nc.close())


class NatsRelayState:
    """`RelayState` in JetStream KV (see the module docstring). Build with `open()`."""

    def __init__(
        self,
        nc: NatsClient,
        registrations: KeyValue,
        authorizations: Sequence[KeyValue],
        claims: Sequence[KeyValue],
        *,
        clock: Callable[[], float] = time.time,
        owns_connection: bool = False,
        metrics: RelayMetrics | None = None,
        gate: OperationGate | None = None,
    ) -> None:
        self._nc = nc
        self._fast_js = nc.jetstream(timeout=FAST_TIMEOUT_S)
        self._leader_trouble = 0.0
        """When (monotonic) the registrations' leader last did not answer a read; for
        `LANE_AVOID_S` after it reads go to the replicas first."""
        self.gate = gate or OperationGate()
        """Bounds this node's operations in flight (the watch is not one of them)."""
        if not authorizations or len(authorizations) != len(claims):
            raise ValueError("one bucket of authorizations and one of claims per lane")
        self._registrations = registrations
        self._authorizations = list(authorizations)
        self._claims = list(claims)
        self._trouble = [0.0] * len(authorizations)
        """Per lane: when (monotonic) an operation last found no leader; 0 once one worked."""
        self._clock = clock
        self._owns_connection = owns_connection
        self._metrics = metrics
        self._listeners: list[RegistrationListener] = []
        self._known: dict[str, _Version] = {}
        """Environment id → version of its registration: enough to count them and to tell,
        after a replay, which changed (a decoded copy would cost every node ~2 KB per
        registration, mostly the executor's public key, which only `/connect` needs, and it
        reads the entry from the bucket)."""
        self._tasks = TaskOwner("relay state watcher")
        self._stopping = False
        self.rewatch = asyncio.Event()
        """Set to start the watch again (after a NATS reconnect its consumer may be gone)."""
        self.synced = asyncio.Event()
        """Set once the watcher has replayed the registrations stored before it started."""

    @classmethod
    async def open(
        cls,
        nc: NatsClient,
        *,
        replicas: int = 1,
        clock: Callable[[], float] = time.time,
        owns_connection: bool = False,
        metrics: RelayMetrics | None = None,
        gate: OperationGate | None = None,
    ) -> NatsRelayState:
        """Bind (creating them if needed) the buckets on `nc` and start watching.

        Raises `StateUnavailable` if JetStream does not answer after several attempts, or if
        `replicas` > 1 on a server whose replicated compare-and-swap is not atomic.
        Cancellation: nothing is left running.
        """
        found = nc.connected_server_version
        server_version = f"{found.major}.{found.minor}.{found.patch}"
        if replicas > 1 and not atomic_replicated_cas(server_version):
            raise StateUnavailable(
                f"nats-server {server_version} cannot hold replicated relay state: its "
                "compare-and-swap is not atomic on replicated streams (nats-io/nats-server#4320, "
                "fixed in 2.9.21); upgrade the servers, or use --nats-replicas 1"
            )
        js = nc.jetstream(timeout=REQUEST_TIMEOUT_S)
        storage = StorageType.FILE
        lanes = TICKET_LANES if replicas > 1 else 1
        registrations = await open_bucket(
            js,
            KeyValueConfig(
                REGISTRATIONS_BUCKET, history=1, replicas=replicas, storage=storage, direct=True
            ),
        )
        await _allow_direct(js, f"KV_{REGISTRATIONS_BUCKET}")
        families: list[list[KeyValue]] = []
        for base, ttl in (
            (AUTHORIZATIONS_BUCKET, AUTHORIZATIONS_TTL_S),
            (CLAIMS_BUCKET, CLAIMS_TTL_S),
        ):
            family = []
            for lane in range(lanes):
                config = KeyValueConfig(
                    lane_bucket(base, lane), history=1, ttl=ttl, replicas=replicas, storage=storage
                )
                await open_bucket(js, config)
                family.append(await open_bucket(nc.jetstream(timeout=FAST_TIMEOUT_S), config))
            families.append(family)
        state = cls(
            nc,
            registrations,
            families[0],
            families[1],
            clock=clock,
            owns_connection=owns_connection,
            metrics=metrics,
            gate=gate,
        )
        state._tasks.spawn(state._watch())
        if lanes > 1 and _version_at_least(server_version, LEADER_PLACEMENT_VERSION):
            streams = [
                [f"KV_{lane_bucket(base, lane)}" for base in (AUTHORIZATIONS_BUCKET, CLAIMS_BUCKET)]
                for lane in range(lanes)
            ]
            state._tasks.spawn(_keep_spread(nc, js, streams, lambda: state._stopping))
        return state

    # --- registrations ------------------------------------------------------------------------

    @_operation("get_registration", repeatable=True)
    async def get_registration(self, environment_id: str) -> Entry[Registration] | None:
        key = _env_key(environment_id)
        if time.monotonic() - self._leader_trouble > LANE_AVOID_S:
            try:
                return await self._read(key, direct=False)
            except NATS_FAILURES as exc:
                if not (_unanswered(exc) or isinstance(exc, asyncio.TimeoutError)):
                    raise StateUnavailable(f"registration read failed: {exc!r}") from None
                self._leader_trouble = time.monotonic()
        try:
            entry = await self._read(key, direct=True)
        except NATS_FAILURES as exc:
            if _unanswered(exc):
                raise _Unanswered(exc) from None
            raise StateUnavailable(f"registration read failed: {exc!r}") from None
        if self._metrics is not None:
            self._metrics.count("kv_replica_reads_total")
        return entry

    async def _read(self, key: str, *, direct: bool) -> Entry[Registration] | None:
        """`key` as the stream's leader has it, or (`direct`) as any replica has it (a
        direct get, answered also while the stream elects a leader; it may lag a little)."""
        try:
            message = await self._fast_js.get_msg(
                f"KV_{REGISTRATIONS_BUCKET}",
                subject=f"$KV.{REGISTRATIONS_BUCKET}.{key}",
                direct=direct,
            )
        except nats.js.errors.NotFoundError:
            return None
        if (message.headers or {}).get("KV-Operation") in ("DEL", "PURGE") or not message.data:
            return None
        return Entry(_decode_registration(message.data), message.seq or 0)

    @_operation("put_registration")
    async def put_registration(
        self, registration: Registration, *, expected_revision: int | None
    ) -> Entry[Registration]:
        key = _env_key(registration.environment_id)
        value = _encode_registration(registration)
        try:
            if expected_revision is None:
                revision = await self._registrations.create(key, value)
            else:
                revision = await self._registrations.update(key, value, last=expected_revision)
        except NATS_FAILURES as exc:
            if _unanswered(exc):
                raise _Unanswered(exc) from None
            if _lost_swap(exc):
                raise RevisionConflict(registration.environment_id) from None
            raise StateUnavailable(f"registration write failed: {exc!r}") from None
        self._leader_trouble = 0.0
        return Entry(registration, revision)

    @_operation("delete_registration")
    async def delete_registration(self, environment_id: str, *, expected_revision: int) -> None:
        try:
            await self._registrations.delete(_env_key(environment_id), last=expected_revision)
        except NATS_FAILURES as exc:
            if _unanswered(exc):
                raise _Unanswered(exc) from None
            if _lost_swap(exc):
                raise RevisionConflict(environment_id) from None
            raise StateUnavailable(f"registration delete failed: {exc!r}") from None

    async def count_registrations(self) -> int:
        return len(self._known)

    def subscribe(self, listener: RegistrationListener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    async def _watch(self) -> None:
        """Follow every registration change (ours and other nodes'), in commit order; start
        again after a NATS outage (the replay of the current values repairs the local copy)."""
        # During a replay: every stored registration's version, and those that differ from
        # what this node knew (only they are kept whole, to be decoded and announced).
        seen: dict[str, _Version] = {}
        changed: dict[str, KeyValue.Entry] = {}
        replaying = True

        def handle(update: KeyValue.Entry | None) -> None:
            nonlocal replaying
            if update is STARTED:
                seen.clear()
                changed.clear()
                replaying = True
                return
            if update is None:  # the stored values have been replayed
                replaying = False
                self._resync(seen, changed)
                seen.clear()
                changed.clear()
                return
            environment_id = _env_of(update.key)
            deleted = update.operation in ("DEL", "PURGE") or update.value is None
            if not replaying:
                self._apply(environment_id, None if deleted else update)
                return
            seen.pop(environment_id, None)
            changed.pop(environment_id, None)
            if not deleted:
                version = seen[environment_id] = _version(update)
                if self._known.get(environment_id) != version:
                    changed[environment_id] = update

        await follow_bucket(
            self._registrations,
            handle,
            self.rewatch,
            what="registration",
            stopping=lambda: self._stopping,
        )

    def _resync(self, seen: dict[str, _Version], changed: dict[str, KeyValue.Entry]) -> None:
        old, self._known = self._known, dict(seen)
        for environment_id in old.keys() - seen.keys():
            self._notify(environment_id, None)
        for environment_id, update in changed.items():
            self._notify(environment_id, _entry(update))
        self.synced.set()

    def _apply(self, environment_id: str, update: KeyValue.Entry | None) -> None:
        if update is None:
            self._known.pop(environment_id, None)
            self._notify(environment_id, None)
        else:
            self._known[environment_id] = _version(update)
            self._notify(environment_id, _entry(update))

    def _notify(self, environment_id: str, entry: Entry[Registration] | None) -> None:
        for listener in list(self._listeners):
            try:
                listener(environment_id, entry)
            except Exception:
                log.exception("registration listener failed")

    # --- authorizations and claims ------------------------------------------------------------

    def _lane(self, key: str) -> int:
        return lane_of(key, len(self._authorizations))

    def usable_key(self, key: str) -> bool:
        failed = self._trouble[self._lane(key)]
        return failed == 0.0 or time.monotonic() - failed > LANE_AVOID_S

    def _fail(self, lane: int, exc: BaseException, what: str) -> NoReturn:
        """Record that `lane` did not answer and raise what the caller reports."""
        self._trouble[lane] = time.monotonic()
        if _unanswered(exc):
            raise _Unanswered(exc) from None
        raise StateUnavailable(f"{what} failed: {exc!r}") from None

    @_operation("issue_authorization", laned=True)
    async def issue_authorization(self, key: str, authorization: Authorization) -> None:
        value = api_encode(
            _Authorization(
                authorization.environment_id,
                authorization.registration_id,
                authorization.harness_key_digest,
                authorization.expires_at,
            )
        )
        lane = self._lane(key)
        try:
            await self._authorizations[lane].put(f"a.{key}", value)
        except NATS_FAILURES as exc:
            self._fail(lane, exc, "authorization write")
        self._trouble[lane] = 0.0

    @_operation("consume_authorization", laned=True)
    async def consume_authorization(self, key: str) -> Authorization | None:
        lane = self._lane(key)
        bucket = self._authorizations[lane]
        try:
            entry = await bucket.get(f"a.{key}")
            if entry.value is None or entry.revision is None:
                return None
            await bucket.delete(f"a.{key}", last=entry.revision)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            return None
        except NATS_FAILURES as exc:
            if _lost_swap(exc):  # another node consumed it first
                return None
            self._fail(lane, exc, "authorization read")
        self._trouble[lane] = 0.0
        raw = api_decode(entry.value, _Authorization)
        if raw.expires_at <= self._clock():
            return None
        return Authorization(
            raw.environment_id, raw.registration_id, raw.harness_key_digest, raw.expires_at
        )

    @_operation("claim_once", laned=True)
    async def claim_once(self, key: str, expires_at: float) -> bool:
        if expires_at <= self._clock():
            return False
        lane = self._lane(key)
        try:
            await self._claims[lane].create(f"c.{key}", b"1")
        except NATS_FAILURES as exc:
            if _lost_swap(exc):
                return False
            self._fail(lane, exc, "claim")
        self._trouble[lane] = 0.0
        return True

    async def aclose(self) -> None:
        self._listeners.clear()
        self._stopping = True  # before the cancellation, which a NATS call may lose
        self.rewatch.set()
        await self._tasks.aclose()
        if self._owns_connection:
            await asyncio.shield(close_connection(self._nc))


async def spread_leaders(nc: NatsClient, js: Any, lanes: Sequence[Sequence[str]]) -> int:
    """Ask each stream of lane i (JetStream stream names) to move its leadership to the i-th
    of its servers by name, when that server is current and another leads it; returns the
    step-downs asked for. Failures are skipped (the next round tries again)."""
    moved = 0
    for lane, streams in enumerate(lanes):
        for stream in streams:
            try:
                info = await js.stream_info(stream)
            except NATS_FAILURES:
                continue
            cluster = info.cluster
            if cluster is None or not cluster.leader:
                continue
            ready = {cluster.leader: True}
            for peer in cluster.replicas or []:
                if peer.name:
                    ready[peer.name] = bool(peer.current) and not peer.offline
            names = sorted(ready)
            target = names[lane % len(names)]
            if target == cluster.leader or not ready[target]:
                continue
            body = json.dumps({"placement": {"preferred": target}}).encode()
            with contextlib.suppress(*NATS_FAILURES):
                await nc.request(
                    f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", body, timeout=REQUEST_TIMEOUT_S
                )
                moved += 1
                log.info("moving the leadership of %s to %s", stream, target)
    return moved


async def _keep_spread(
    nc: NatsClient, js: Any, lanes: Sequence[Sequence[str]], stopping: Callable[[], bool]
) -> None:
    """`spread_leaders` now and every `SPREAD_INTERVAL_S` (jittered, so that the nodes do not
    all ask at once), until `stopping()`. Cancellation: stops (and a cancellation a NATS call
    loses ends the loop at its next turn, see `follow_bucket`)."""
    while not stopping():
        await spread_leaders(nc, js, lanes)
        await asyncio.sleep(SPREAD_INTERVAL_S * random.uniform(0.5, 1.5))


STARTED: Final = cast("KeyValue.Entry", object())
"""Passed to a `follow_bucket` handler when a watch (re)starts: a replay follows."""
WATCH_RETRY_S: Final = 0.5


async def _drain_watch(
    watcher: KeyValue.KeyWatcher, handle: Callable[[KeyValue.Entry | None], None]
) -> None:
    async for update in watcher:
        handle(update)


async def follow_bucket(
    bucket: KeyValue,
    handle: Callable[[KeyValue.Entry | None], None],
    rewatch: asyncio.Event,
    *,
    what: str,
    stopping: Callable[[], bool],
) -> None:
    """Until `stopping()`: watch every key of `bucket` and pass `handle` `STARTED`, then each
    stored value, then None (replayed), then every change; start again when `rewatch` is set or
    the watch fails (NATS ordered consumers do not always survive a server's death).

    Cancellation: the watch is stopped. An owner sets what `stopping()` reads and `rewatch`
    before cancelling: nats-py waits with `asyncio.wait_for`, which on Python 3.11 returns a
    result that arrives with the cancellation instead of raising it, so a cancellation can be
    lost inside a NATS call; the loop then ends at its next turn instead of running on.
    """
    while not stopping():
        rewatch.clear()
        try:
            watcher = await bucket.watchall()
        except Exception as exc:
            log.warning("%s watch could not start (%r); trying again", what, exc)
            await asyncio.sleep(WATCH_RETRY_S)
            continue
        handle(STARTED)

        following = asyncio.ensure_future(_drain_watch(watcher, handle))
        again = asyncio.ensure_future(rewatch.wait())
        try:
            await asyncio.wait({following, again}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (following, again):
                task.cancel()
            await asyncio.gather(following, again, return_exceptions=True)
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
        if rewatch.is_set():
            log.info("%s watch starting again", what)
            continue
        failure = None if following.cancelled() else following.exception()
        log.warning("%s watch ended (%r); watching again", what, failure)
        await asyncio.sleep(WATCH_RETRY_S)


async def _allow_direct(js: Any, stream: str) -> None:
    """Enable direct gets on `stream` if a bucket created before lacks them (best effort:
    reads then only fall back to replicas once a later start manages it)."""
    try:
        info = await js.stream_info(stream)
        if not info.config.allow_direct:
            info.config.allow_direct = True
            await js.update_stream(info.config)
    except NATS_FAILURES as exc:
        log.warning("could not enable direct gets on %s: %r", stream, exc)


async def open_bucket(js: Any, config: KeyValueConfig) -> KeyValue:
    """Bind the bucket, creating it if it does not exist; retried while a fresh cluster is
    still electing (creating replicated streams then times out now and then)."""
    delay = 0.2
    for attempt in range(BUCKET_SETUP_ATTEMPTS):
        try:
            try:
                bucket: KeyValue = await js.key_value(config.bucket)
                return bucket
            except nats.js.errors.BucketNotFoundError:
                created: KeyValue = await js.create_key_value(config)
                return created
        except NATS_FAILURES as exc:
            if attempt == BUCKET_SETUP_ATTEMPTS - 1:
                raise StateUnavailable(f"cannot set up bucket {config.bucket}: {exc!r}") from None
            log.info("relay state: bucket %s not ready (%r); retrying", config.bucket, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


__all__ = [
    "FIXED_CAS_VERSION",
    "NATS_FAILURES",
    "NatsEvents",
    "NatsRelayState",
    "atomic_replicated_cas",
    "close_connection",
    "connect_nats",
    "follow_bucket",
    "lane_bucket",
    "lane_of",
    "open_bucket",
    "spread_leaders",
]
