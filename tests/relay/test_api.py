"""The registry JSON (RELAY.md §2): exact bytes, strict public keys, tolerant responses, URLs."""

from __future__ import annotations

import base64
import json

import pytest

from execserver.relay import api

X = bytes(range(32))
M = bytes(i % 251 for i in range(1184))
KEY = api.NoisePublicKey.from_raw(X, M)
KEY_JSON = (
    '{"suite":"Noise_hybridIK_X25519+MLKEM768_AESGCM_SHA256",'
    f'"x25519_public_key":"{base64.b64encode(X).decode()}",'
    f'"mlkem768_public_key":"{base64.b64encode(M).decode()}"}}'
)


def test_api_register_request_is_byte_exact() -> None:
    """The register body is compact JSON in codex's key order, 1792 bytes with real keys."""
    body = api.encode(api.RegisterRequest(api.SECURITY_PROFILE, KEY))
    assert body.decode() == (
        f'{{"security_profile":"noise_hybrid_ik_v1","executor_public_key":{KEY_JSON}}}'
    )
    assert len(body) == 1792
    assert api.decode(body, api.RegisterRequest) == api.RegisterRequest(api.SECURITY_PROFILE, KEY)


def test_api_connect_and_validate_requests_are_byte_exact() -> None:
    """connect is 1751 bytes; validate carries registration id, key and authorization."""
    connect = api.encode(api.ConnectRequest(KEY))
    assert connect.decode() == f'{{"harness_public_key":{KEY_JSON}}}'
    assert len(connect) == 1751
    validate = api.encode(api.ValidateRequest("reg_1", KEY, "hka_x"))
    assert validate.decode() == (
        f'{{"executor_registration_id":"reg_1","harness_public_key":{KEY_JSON},'
        '"harness_key_authorization":"hka_x"}'
    )


def test_api_responses_are_byte_exact() -> None:
    """Responses are written in the key order RELAY.md shows."""
    register = api.RegisterResponse("test1", "ws://h/relay/executor?ticket=t", "p", "reg_1")
    assert api.encode(register) == (
        b'{"environment_id":"test1","url":"ws://h/relay/executor?ticket=t",'
        b'"security_profile":"p","executor_registration_id":"reg_1"}'
    )
    connect = api.ConnectResponse("test1", "ws://u", "p", "reg_1", KEY, "hka_1")
    assert api.encode(connect).decode() == (
        '{"environment_id":"test1","url":"ws://u","security_profile":"p",'
        f'"executor_registration_id":"reg_1","executor_public_key":{KEY_JSON},'
        '"harness_key_authorization":"hka_1"}'
    )
    assert api.encode(api.ValidateResponse(valid=True)) == b'{"valid":true}'
    assert api.encode(api.ErrorBody.of("forbidden", "no")) == (
        b'{"error":{"code":"forbidden","message":"no"}}'
    )


def test_api_responses_tolerate_unknown_fields() -> None:
    """Extra members (e.g. transport_policy) are ignored, as the codex clients do."""
    body = json.dumps(
        {
            "environment_id": "e",
            "url": "ws://u",
            "security_profile": "noise_hybrid_ik_v1",
            "executor_registration_id": "r",
            "transport_policy": {"version": 1},
        }
    ).encode()
    assert api.decode(body, api.RegisterResponse).executor_registration_id == "r"
    assert api.decode(b'{"valid":true,"x":1}', api.ValidateResponse).valid is True


def _key_with(**changes: object) -> bytes:
    key = json.loads(KEY_JSON)
    key.update(changes)
    return json.dumps({"harness_public_key": key}).encode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_key_with(extra=1), "unknown field `extra`"),
        (_key_with(suite="Noise_IK_25519_AESGCM_SHA256"), "unsupported Noise suite"),
        (_key_with(x25519_public_key=base64.b64encode(X[:31]).decode()), "must be 32 bytes"),
        (_key_with(mlkem768_public_key=base64.b64encode(M + b"x").decode()), "must be 1184"),
        (_key_with(x25519_public_key=base64.b64encode(X).decode().rstrip("=")), "base64"),
        (_key_with(x25519_public_key=base64.b64encode(X).decode()[:-2] + "B="), "base64"),
        (_key_with(x25519_public_key=base64.urlsafe_b64encode(X + b"\xff").decode()), "base64"),
        (_key_with(x25519_public_key=" " + base64.b64encode(X).decode()), "base64"),
        (_key_with(x25519_public_key=32), "base64"),
        (json.dumps({"harness_public_key": {"suite": api.NOISE_SUITE}}).encode(), "missing"),
        (b"{", "truncated|malformed|JSON"),
    ],
    ids=[
        "unknown-field",
        "suite",
        "x25519-length",
        "mlkem-length",
        "no-padding",
        "non-canonical-bits",
        "urlsafe-alphabet",
        "whitespace",
        "not-a-string",
        "missing-members",
        "bad-json",
    ],
)
def test_api_public_keys_are_strict(body: bytes, message: str) -> None:
    """A public key has exactly three members, the suite, and canonical base64 of 32/1184 B."""
    with pytest.raises(api.ApiError, match=message):
        api.decode(body, api.ConnectRequest)


def test_api_base64_parse_is_canonical() -> None:
    """Only the canonical padded encoding is accepted (unused bits must be zero)."""
    assert api.Base64Bytes.parse("QUI=") == b"AB"
    for text in ("QUJ=", "QUI", "QUI==", "Q UI=", "QU-="):
        with pytest.raises(ValueError, match="invalid base64"):
            api.Base64Bytes.parse(text)


def test_api_from_raw_checks_lengths() -> None:
    """A key built from raw halves is checked too."""
    with pytest.raises(ValueError, match="must be 32 bytes"):
        api.NoisePublicKey.from_raw(b"short", M)


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://127.0.0.1:18090", "http://127.0.0.1:18090/cloud/environment/test1/connect"),
        ("http://127.0.0.1:18090/", "http://127.0.0.1:18090/cloud/environment/test1/connect"),
        ("https://r.example/base//", "https://r.example/base/cloud/environment/test1/connect"),
    ],
)
def test_api_registry_url_trims_trailing_slashes(base: str, expected: str) -> None:
    """`{base}/cloud/environment/{env}/{op}` with the base's trailing `/` trimmed."""
    assert api.registry_url(base, "test1", api.CONNECT) == expected


def test_api_constants_match_relay_md() -> None:
    """Header names, the profile and the rejection reasons are the codex ones."""
    assert api.SECURITY_PROFILE == "noise_hybrid_ik_v1"
    assert api.STREAM_ID_HEADER == "x-codex-noise-stream-id"
    assert api.REJECTION_REASON_HEADER == "x-codex-rendezvous-rejection-reason"
    assert api.CHATGPT_ACCOUNT_ID_HEADER == "chatgpt-account-id"
    assert len(api.REJECTION_REASONS) == 17
    assert {"expired", "invalid_signature", "route_unavailable"} <= api.REJECTION_REASONS
    assert api.bearer("t") == {"Authorization": "Bearer t"}
