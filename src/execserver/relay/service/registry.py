"""The registry HTTP API (RELAY.md §2): `POST /cloud/environment/{env}/register|connect|validate`.

Handlers are thin: check the bearer for the operation's role and the environment's scope,
decode the body (`relay.api`), run the transition (`registrations`), sign the ticket of the
rendezvous URL, encode the answer. Failures are `{"error":{"code","message"}}` bodies with
the status codes the codex clients understand: 400 bad request, 401 bad token, 403 token not
scoped for the environment, 404 unknown environment, 409 write conflict, 503 no executor or
state unavailable. Nothing secret is logged: no token, authorization, ticket or key.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import msgspec
from aiohttp import web

from execserver.relay import api
from execserver.relay.service.access import AccessPolicy, Role, Verdict
from execserver.relay.service.defaults import (
    CONNECT_WAIT_S,
    EXECUTOR_TICKET_TTL_S,
    HARNESS_TICKET_TTL_S,
)
from execserver.relay.service.metrics import RelayMetrics
from execserver.relay.service.overload import gate_of, retry_after_header
from execserver.relay.service.registrations import EnvironmentInUse, Registrations, Validation
from execserver.relay.service.state import Registration, RevisionConflict, StateUnavailable
from execserver.relay.service.tickets import EXECUTOR, HARNESS, Ticket, TicketSigner, new_nonce

log = logging.getLogger(__name__)
T = TypeVar("T")

ENVIRONMENT_ID: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,255}")
"""Accepted environment ids: 1-256 of `A-Z a-z 0-9 _ - .`, not starting with a dot."""
EXECUTOR_PATH: Final = "/relay/executor"
HARNESS_PATH: Final = "/relay/harness"


class RegistryFailure(Exception):
    """A request the registry refuses: answered with `status` and an error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    executor_ticket_ttl_s: float = EXECUTOR_TICKET_TTL_S
    harness_ticket_ttl_s: float = HARNESS_TICKET_TTL_S
    connect_wait_s: float = CONNECT_WAIT_S


def json_response(message: msgspec.Struct, status: int = 200) -> web.Response:
    return web.Response(status=status, body=api.encode(message), content_type="application/json")


def error_response(status: int, code: str, message: str) -> web.Response:
    return json_response(api.ErrorBody.of(code, message), status)


Action = Callable[[web.Request, str, bytes], Awaitable[msgspec.Struct]]


class Registry:
    """The three registry endpoints of one node.

    Args:
        registrations: the control plane.
        access: the bearer-token rules.
        signer: signs rendezvous tickets.
        metrics: the node's counters.
        rendezvous_base: returns the `ws://`/`wss://` base of rendezvous URLs.
        harness_base: the base of a harness's rendezvous URL for a registration (in a fleet,
            the node holding its executor when that node advertises a URL); default
            `rendezvous_base`.
        settings: lifetimes and waits.
        clock: the time source, UNIX seconds.
    """

    def __init__(
        self,
        *,
        registrations: Registrations,
        access: AccessPolicy,
        signer: TicketSigner,
        metrics: RelayMetrics,
        rendezvous_base: Callable[[], str],
        harness_base: Callable[[Registration], str] | None = None,
        settings: RegistrySettings = RegistrySettings(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._registrations = registrations
        self._access = access
        self._signer = signer
        self._metrics = metrics
        self._rendezvous_base = rendezvous_base
        self._harness_base = harness_base or (lambda _registration: rendezvous_base())
        self._settings = settings
        self._clock = clock

    def routes(self) -> list[web.RouteDef]:
        prefix = "/cloud/environment/{environment_id}/"
        return [
            web.post(prefix + api.REGISTER, self.register),
            web.post(prefix + api.CONNECT, self.connect),
            web.post(prefix + api.VALIDATE, self.validate),
        ]

    async def register(self, request: web.Request) -> web.Response:
        """`POST …/register` (executor bearer).

        Cancellation: the registration may or may not have been stored.
        """
        return await self._serve(api.REGISTER, Role.EXECUTOR, request, self._register)

    async def connect(self, request: web.Request) -> web.Response:
        """`POST …/connect` (harness bearer).

        Cancellation: an authorization may have been issued; it expires unused.
        """
        return await self._serve(api.CONNECT, Role.HARNESS, request, self._connect)

    async def validate(self, request: web.Request) -> web.Response:
        """`POST …/validate` (executor bearer).

        Cancellation: the authorization may have been consumed.
        """
        return await self._serve(api.VALIDATE, Role.EXECUTOR, request, self._validate)

    async def _serve(
        self, operation: str, role: Role, request: web.Request, action: Action
    ) -> web.Response:
        environment_id = request.match_info["environment_id"]
        try:
            verdict = self._access.check(role, request.headers.get("Authorization"), environment_id)
            if verdict is Verdict.UNAUTHORIZED:
                raise RegistryFailure(401, "unauthorized", "missing or unknown bearer token")
            if verdict is Verdict.FORBIDDEN:
                raise RegistryFailure(
                    403, "forbidden", f"the token may not use environment `{environment_id}`"
                )
            if not ENVIRONMENT_ID.fullmatch(environment_id):
                raise RegistryFailure(
                    400, "invalid_environment_id", "environment ids are 1-256 of A-Za-z0-9._-"
                )
            body = await request.read()
            response = json_response(await action(request, environment_id, body))
        except RegistryFailure as failure:
            response = error_response(failure.status, failure.code, failure.message)
        except EnvironmentInUse as exc:
            code = "registration_conflict" if exc.concurrent else "environment_in_use"
            response = error_response(409, code, str(exc))
        except RevisionConflict:
            response = error_response(
                409, "registration_conflict", "the registration changed concurrently; retry"
            )
        except StateUnavailable:
            log.warning("relay state unavailable", extra={"operation": operation})
            response = error_response(503, "unavailable", "the registry cannot answer now")
            response.headers.update(retry_after_header(gate_of(self._registrations.state)))
        self._metrics.count(
            "registry_requests_total", operation=operation, status=str(response.status)
        )
        if response.status != 200:
            log.info(
                "registry request refused",
                extra={
                    "operation": operation,
                    "environment_id": environment_id,
                    "status": response.status,
                },
            )
        return response

    def _url(self, path: str, ticket: Ticket, base: str | None = None) -> str:
        base = self._rendezvous_base() if base is None else base
        return f"{base}{path}?ticket={self._signer.issue(ticket)}"

    async def _register(
        self, request: web.Request, environment_id: str, body: bytes
    ) -> api.RegisterResponse:
        message = _decode(body, api.RegisterRequest)
        if message.security_profile != api.SECURITY_PROFILE:
            raise RegistryFailure(
                400,
                "unsupported_security_profile",
                f"unsupported security profile `{message.security_profile}`",
            )
        registration = await self._registrations.register(
            environment_id, message.executor_public_key
        )
        log.info(
            "environment registered",
            extra={
                "environment_id": environment_id,
                "registration_id": registration.registration_id,
                "epoch": registration.epoch,
            },
        )
        expires_at = int(self._clock() + self._settings.executor_ticket_ttl_s)
        ticket = Ticket(EXECUTOR, environment_id, registration.registration_id, expires_at)
        return api.RegisterResponse(
            environment_id=environment_id,
            url=self._url(EXECUTOR_PATH, ticket),
            security_profile=api.SECURITY_PROFILE,
            executor_registration_id=registration.registration_id,
        )

    async def _connect(
        self, request: web.Request, environment_id: str, body: bytes
    ) -> api.ConnectResponse:
        message = _decode(body, api.ConnectRequest)
        registration = await self._registrations.wait_attached(
            environment_id, self._settings.connect_wait_s
        )
        if registration is None:
            raise RegistryFailure(
                404, "environment_not_found", f"no executor registered `{environment_id}`"
            )
        if not self._registrations.attached(registration):
            raise RegistryFailure(
                503,
                "executor_unavailable",
                f"the executor of `{environment_id}` is not connected",
            )
        authorization = await self._registrations.authorize(
            registration, message.harness_public_key
        )
        expires_at = int(self._clock() + self._settings.harness_ticket_ttl_s)
        ticket = Ticket(
            HARNESS, environment_id, registration.registration_id, expires_at, new_nonce()
        )
        log.info(
            "connect bundle issued",
            extra={
                "environment_id": environment_id,
                "registration_id": registration.registration_id,
            },
        )
        return api.ConnectResponse(
            environment_id=environment_id,
            url=self._url(HARNESS_PATH, ticket, self._harness_base(registration)),
            security_profile=api.SECURITY_PROFILE,
            executor_registration_id=registration.registration_id,
            executor_public_key=registration.executor_public_key,
            harness_key_authorization=authorization,
        )

    async def _validate(
        self, request: web.Request, environment_id: str, body: bytes
    ) -> api.ValidateResponse:
        message = _decode(body, api.ValidateRequest)
        if len(message.harness_key_authorization.encode()) > api.MAX_AUTHORIZATION_BYTES:
            outcome = Validation.UNKNOWN
        else:
            outcome = await self._registrations.validate(
                environment_id,
                message.executor_registration_id,
                message.harness_public_key,
                message.harness_key_authorization,
            )
        self._metrics.count("validations_total", outcome=outcome.value)
        log.info(
            "harness key validated",
            extra={
                "environment_id": environment_id,
                "registration_id": message.executor_registration_id,
                "stream_id": request.headers.get(api.STREAM_ID_HEADER, ""),
                "outcome": outcome.value,
            },
        )
        return api.ValidateResponse(valid=outcome is Validation.VALID)


def _decode(body: bytes, message_type: type[T]) -> T:
    try:
        return api.decode(body, message_type)
    except api.ApiError as exc:
        raise RegistryFailure(400, "invalid_request", str(exc)) from None


__all__ = [
    "CONNECT_WAIT_S",
    "ENVIRONMENT_ID",
    "EXECUTOR_PATH",
    "EXECUTOR_TICKET_TTL_S",
    "HARNESS_PATH",
    "HARNESS_TICKET_TTL_S",
    "Registry",
    "RegistryFailure",
    "RegistrySettings",
    "error_response",
    "json_response",
]
