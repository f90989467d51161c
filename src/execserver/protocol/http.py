"""Wire structs of `http/request` and its streamed body notifications. Pure data."""

from __future__ import annotations

import msgspec

from execserver.protocol.base import Base64Bytes, UnitEnum, WideU64, WireStruct


class RedirectPolicy(UnitEnum):
    variants = ("follow", "stop")


class HttpHeader(WireStruct):
    rust_name = "HttpHeader"
    rust_len = 3
    rust_defaults = frozenset({"valueEnvVar"})  # a positional header may omit it

    name: str
    value: str
    value_env_var: str | None = None


class HttpRequestParams(WireStruct, kw_only=True):
    rust_name = "HttpRequestParams"
    rust_len = 8

    method: str
    url: str
    headers: list[HttpHeader] = msgspec.field(default_factory=list)
    body_base64: Base64Bytes | None = None
    timeout_ms: WideU64 | None = None
    redirect_policy: RedirectPolicy = RedirectPolicy("follow")
    request_id: str
    stream_response: bool = False


class HttpResponseHeader(WireStruct):
    name: str
    value: str


class HttpRequestResponse(WireStruct):
    status: int
    headers: list[HttpResponseHeader]
    body_base64: bytes


class HttpRequestBodyDeltaNotification(WireStruct):
    request_id: str
    seq: int
    delta_base64: bytes
    done: bool
    error: str | None
