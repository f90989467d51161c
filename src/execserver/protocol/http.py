"""Wire structs of `http/request` and its streamed body notifications. Pure data."""

from __future__ import annotations

from typing import Literal

import msgspec

from execserver.protocol.base import U64, Base64Bytes, WireStruct, variants

RedirectPolicy = Literal["follow", "stop"]
variants(RedirectPolicy)


class HttpHeader(WireStruct):
    rust_name = "HttpHeader"
    rust_len = 3

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
    timeout_ms: U64 | None = None
    redirect_policy: RedirectPolicy = "follow"
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
