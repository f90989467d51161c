"""Calls to an environment registry (RELAY.md §2), for the executor and the harness side.

One pooled httpx client per `RegistryClient` (or one shared by many), no redirects, a 10 s
timeout per request (the reference's). Failures become `RegistryError`s carrying the HTTP
status (None when no answer came) and the registry's own error text; the bearer token never
appears in them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass
from typing import Literal, TypeVar

import httpx
import msgspec

from execserver.errors import ConnectError
from execserver.relay import api
from execserver.transport.http import parse_retry_after

REQUEST_TIMEOUT_S = 10.0
"""Per registry request, as the reference (`route-aware request timed out`)."""

T = TypeVar("T")


LOST_ENVIRONMENT_CODES = frozenset({"environment_in_use", "registration_conflict"})
"""409 error codes of our relay: another executor holds the environment id."""


class RegistryError(ConnectError):
    """A registry request failed: `status` is the HTTP status (None: no answer at all)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s
        """The answer's `Retry-After`, in seconds (None: none, or not in seconds)."""

    @property
    def is_auth_failure(self) -> bool:
        return self.status in (401, 403)

    @property
    def is_final(self) -> bool:
        """A refusal that asking again cannot change: a 4xx other than 408/409/425/429, or a
        409 saying another executor holds the environment (asking again would start a fight
        over it)."""
        if self.status == 409 and self.code in LOST_ENVIRONMENT_CODES:
            return True
        return (
            self.status is not None
            and 400 <= self.status < 500
            and self.status
            not in (
                408,
                409,
                425,
                429,
            )
        )


@dataclass(frozen=True, slots=True)
class ConnectBundle:
    """What `/connect` hands a harness for one rendezvous attempt, checked as codex does."""

    url: str
    registration_id: str
    executor_key: api.NoisePublicKey
    authorization: str


Validation = Literal["valid", "invalid", "unauthorized", "failed"]


def registry_http_client(timeout_s: float = REQUEST_TIMEOUT_S) -> httpx.AsyncClient:
    """The HTTP pool registry calls use: no redirects, `timeout_s` per request, TCP_NODELAY as
    codex sets it (a request's head and body go out without waiting for an ACK; Nagle and
    delayed ACKs cost ~40 ms per request otherwise). Creating one loads the TLS trust store
    (tens of milliseconds): many clients in one process share one (`RegistryClient(http=…)`)."""
    transport = httpx.AsyncHTTPTransport(
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)], trust_env=True
    )
    return httpx.AsyncClient(
        follow_redirects=False, timeout=timeout_s, trust_env=True, transport=transport
    )


class RegistryClient:
    """The registry at `base_url` (http:// or https://), for one environment id. `http` is a
    pool shared with other clients (`registry_http_client()`), which `aclose()` leaves open;
    by default the client makes its own."""

    def __init__(
        self,
        base_url: str,
        environment_id: str,
        token: str,
        *,
        account_id: str | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url
        self.environment_id = environment_id
        self._headers = {**api.bearer(token), "Content-Type": "application/json"}
        if account_id:
            self._headers[api.CHATGPT_ACCOUNT_ID_HEADER] = account_id
        self._timeout_s = timeout_s
        self._owns_http = http is None
        self._http = http or registry_http_client(timeout_s)

    async def _post(
        self,
        operation: str,
        body: msgspec.Struct,
        answer: type[T],
        extra_headers: dict[str, str] | None = None,
    ) -> T:
        url = api.registry_url(self.base_url, self.environment_id, operation)
        headers = self._headers if not extra_headers else {**self._headers, **extra_headers}
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._http.post(url, content=api.encode(body), headers=headers)
        except TimeoutError:
            raise RegistryError(
                f"environment registry {operation} timed out after {self._timeout_s:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise RegistryError(
                f"environment registry {operation} failed: {type(exc).__name__}: {exc}"
            ) from None
        if response.status_code != 200:
            raise _status_error(operation, response)
        try:
            return api.decode(response.content, answer)
        except api.ApiError as exc:
            raise RegistryError(
                f"environment registry {operation} answered unexpected JSON: {exc}",
                status=response.status_code,
            ) from None

    # -- executor ------------------------------------------------------------------------------

    async def register(self, public_key: api.NoisePublicKey) -> api.RegisterResponse:
        """Register this executor; the answer names the rendezvous URL and the registration.

        Raises `RegistryError`. Cancellation: the request is abandoned.
        """
        answer = await self._post(
            api.REGISTER,
            api.RegisterRequest(api.SECURITY_PROFILE, public_key),
            api.RegisterResponse,
        )
        if answer.environment_id != self.environment_id:
            raise RegistryError("environment registry returned a different environment id")
        if answer.security_profile != api.SECURITY_PROFILE:
            raise RegistryError(f"unsupported security profile `{answer.security_profile}`")
        return answer

    async def validate(
        self,
        registration_id: str,
        harness_key: api.NoisePublicKey,
        authorization: str,
        stream_id: str,
    ) -> Validation:
        """Ask whether `authorization` admits `harness_key` on `stream_id` (RELAY.md §2.3).

        Never raises for the registry's answer: `unauthorized` (our credentials were refused:
        401), `invalid` (a clear no), `failed` (any other failure or timeout).
        Cancellation: the request is abandoned.
        """
        try:
            answer = await self._post(
                api.VALIDATE,
                api.ValidateRequest(registration_id, harness_key, authorization),
                api.ValidateResponse,
                {api.STREAM_ID_HEADER: stream_id},
            )
        except RegistryError as exc:
            if exc.status == 401:
                return "unauthorized"
            return "invalid" if exc.status == 200 else "failed"
        return "valid" if answer.valid else "invalid"

    # -- harness -------------------------------------------------------------------------------

    async def connect(self, harness_key: api.NoisePublicKey) -> ConnectBundle:
        """A one-time connect bundle for `harness_key`, checked as codex checks it.

        Raises `RegistryError`. Cancellation: the request is abandoned.
        """
        answer = await self._post(api.CONNECT, api.ConnectRequest(harness_key), api.ConnectResponse)
        if answer.environment_id != self.environment_id:
            raise RegistryError("environment registry returned a different environment id")
        if answer.security_profile != api.SECURITY_PROFILE:
            raise RegistryError(f"unsupported security profile `{answer.security_profile}`")
        if not answer.url.startswith(("ws://", "wss://")):
            raise RegistryError(
                "environment registry returned a rendezvous URL scheme not supported"
            )
        for name in ("url", "executor_registration_id", "harness_key_authorization"):
            if not getattr(answer, name).strip():
                raise RegistryError(f"environment registry returned an empty {name}")
        return ConnectBundle(
            answer.url,
            answer.executor_registration_id,
            answer.executor_public_key,
            answer.harness_key_authorization,
        )

    async def aclose(self) -> None:
        """Close the pooled connections (not a pool passed in as `http`). Cancellation: closed
        anyway."""
        if not self._owns_http:
            return
        with contextlib.suppress(Exception):
            await asyncio.shield(self._http.aclose())


def _status_error(operation: str, response: httpx.Response) -> RegistryError:
    status = response.status_code
    code, message = "", response.text.strip()[:500]
    with contextlib.suppress(api.ApiError):
        detail = api.decode(response.content, api.ErrorBody).error
        code, message = detail.code, detail.message
    phrase = f"{status} {response.reason_phrase}".strip()
    kind = "authentication failed" if status in (401, 403) else "request failed"
    text = f"environment registry {operation} {kind} ({phrase}" + (f", {code})" if code else ")")
    return RegistryError(
        text + (f": {message}" if message else ""),
        status=status,
        code=code,
        retry_after_s=parse_retry_after(response.headers.get("Retry-After")),
    )
