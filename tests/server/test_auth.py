"""WebSocket authentication, differential against the pinned codex where the wire is shared.

* startup validation: exit status and first stderr line for every bad flag combination;
* upgrade requests: status and body for every way a token can be wrong, in check order;
* our deliberate differences: a session is resumable only by its principal, and a
  non-loopback listener without auth refuses to start.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.conftest import ServerProcess, require_reference
from tests.harness.rawws import RawWebSocket
from tests.harness.servers import (
    ours_command,
    reference_command,
    running_server,
    start_server,
)

SECRET = b"0123456789abcdef0123456789abcdef0123456789abcdef-shared"
TOKEN = "capability-token-e2e"
ISSUER = "issuer-x"
AUDIENCE = "audience-x"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("auth")
    (base / "token").write_text(f"  {TOKEN}\n")
    (base / "secret").write_bytes(SECRET + b"\n")
    (base / "short").write_bytes(b"short-secret")
    (base / "blank").write_text("  \n")
    return base


# -- startup validation ------------------------------------------------------------------------

HEX = hashlib.sha256(TOKEN.encode()).hexdigest()
BAD_FLAGS: list[list[str]] = [
    ["--ws-auth", "capability-token"],
    ["--ws-auth", "capability-token", "--ws-token-file", "{d}/token", "--ws-token-sha256", HEX],
    ["--ws-token-file", "{d}/token"],
    ["--ws-issuer", "x"],
    ["--ws-auth", "capability-token", "--ws-token-sha256", "abc"],
    ["--ws-auth", "capability-token", "--ws-token-sha256", "zz" + HEX[2:]],
    ["--ws-auth", "signed-bearer-token"],
    ["--ws-auth", "signed-bearer-token", "--ws-shared-secret-file", "{d}/short"],
    ["--ws-auth", "signed-bearer-token", "--ws-shared-secret-file", "{d}/missing"],
    ["--ws-auth", "signed-bearer-token", "--ws-shared-secret-file", "{d}"],
    ["--ws-auth", "signed-bearer-token", "--ws-shared-secret-file", "{d}/blank"],
    ["--ws-auth", "capability-token", "--ws-token-file", "{d}/missing"],
    ["--ws-auth", "capability-token", "--ws-token-file", "{d}/blank"],
    ["--ws-auth", "capability-token", "--ws-token-file", "{d}/token", "--ws-issuer", "i"],
    ["--ws-auth", "capability-token", "--ws-token-sha256", "bad", "--ws-audience", "a"],
    ["--ws-auth", "signed-bearer-token", "--ws-shared-secret-file", "{d}/secret",
     "--ws-token-file", "{d}/token"],
    ["--ws-auth", "signed-bearer-token", "--ws-token-sha256", "bad"],
    ["--ws-auth", "signed-bearer-token", "--ws-shared-secret-file", "{d}/secret",
     "--ws-max-clock-skew-seconds", "9223372036854775808"],
    ["--ws-auth", "signed-bearer-token", "--ws-shared-secret-file", "{d}/missing",
     "--ws-max-clock-skew-seconds", "18446744073709551615"],
    # the order of the stages: flag combinations, then --listen, then stdio, then files
    ["--listen", "bogus", "--ws-auth", "capability-token"],
    ["--listen", "bogus", "--ws-auth", "capability-token", "--ws-token-file", "{d}/missing"],
    ["--listen", "bogus", "--ws-auth", "capability-token", "--ws-token-sha256", "bad"],
    ["--listen", "stdio", "--ws-auth", "capability-token", "--ws-token-file", "{d}/missing"],
    ["--listen", "stdio", "--ws-auth", "signed-bearer-token"],
]  # fmt: skip


def _outcome(command: list[str]) -> tuple[int, str]:
    """Exit status and first stderr line of a server that must refuse to start."""
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
    first = result.stderr.decode().splitlines()[0] if result.stderr else ""
    return result.returncode, first


def _expand(flags: list[str], directory: Path) -> tuple[str, list[str]]:
    args = [flag.replace("{d}", str(directory)) for flag in flags]
    listen = "ws://127.0.0.1:0"
    if "--listen" in args:
        at = args.index("--listen")
        listen = args[at + 1]
        del args[at : at + 2]
    return listen, args


@pytest.mark.reference
@pytest.mark.parametrize("flags", BAD_FLAGS, ids=lambda f: " ".join(f)[:60])
def test_auth_startup_validation_matches_reference(flags: list[str], files: Path) -> None:
    require_reference()
    listen, args = _expand(flags, files)
    ours = _outcome(ours_command(listen, args))
    reference = _outcome(reference_command(listen, args))
    assert ours == reference
    assert ours[0] == 1 and ours[1].startswith("Error: ")


GOOD_FLAGS: list[list[str]] = [
    ["--ws-auth", "capability-token", "--ws-token-sha256", HEX.upper()],
    ["--ws-auth", "capability-token", "--ws-token-sha256", f" {HEX} "],
    ["--ws-auth", "signed-bearer-token", "--ws-shared-secret-file", "{d}/secret",
     "--ws-max-clock-skew-seconds", "0", "--ws-issuer", ""],
    ["--ws-auth", "signed-bearer-token", "--ws-shared-secret-file", "{d}/secret",
     "--ws-max-clock-skew-seconds", "9223372036854775807"],
]  # fmt: skip


@pytest.mark.parametrize("flags", GOOD_FLAGS, ids=lambda f: " ".join(f)[:60])
async def test_auth_accepted_configurations_start(flags: list[str], files: Path) -> None:
    _, args = _expand(flags, files)
    server = await start_server("ours", files, extra=args)
    assert await server.stop() == 0


# -- the upgrade request -----------------------------------------------------------------------


async def upgrade(
    port: int, headers: list[tuple[str, bytes]], target: str = "/"
) -> tuple[int, str]:
    """Status and body of a WebSocket upgrade request with extra `headers`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = f"GET {target} HTTP/1.1\r\n".encode() + (
            b"Host: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        )
        for name, value in headers:
            head += name.encode() + b": " + value + b"\r\n"
        writer.write(head + b"\r\n")
        response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status = int(response.split(b" ", 2)[1])
        if status == 101:
            return status, ""
        length = 0
        for line in response.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        body = await asyncio.wait_for(reader.readexactly(length), 10)
        return status, body.decode()
    finally:
        writer.close()


def bearer(token: str, scheme: str = "Bearer") -> list[tuple[str, bytes]]:
    return [("Authorization", f"{scheme} {token}".encode())]


def make_jwt(
    claims: dict[str, Any], *, key: bytes = SECRET, alg: str = "HS256", **headers: Any
) -> str:
    return jwt.encode(claims, key, algorithm=alg, headers=headers or None)


def raw_jwt(header: dict[str, Any], claims: Any, key: bytes = SECRET) -> str:
    """A token with any claims JSON (PyJWT refuses some), signed HS256."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing = part(json.dumps(header).encode()) + "." + part(json.dumps(claims).encode())
    signature = hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return signing + "." + part(signature)


Case = Callable[[], list[tuple[str, bytes]]]


def _jwt_cases() -> dict[str, Case]:
    def good(**overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {"exp": now + 300, "iss": ISSUER, "aud": AUDIENCE, "sub": "u"}
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def now() -> int:
        return int(time.time())

    hs256 = {"alg": "HS256", "typ": "JWT"}
    return {
        "valid": lambda: bearer(make_jwt(good())),
        "lowercase-scheme-double-space": lambda: bearer(" " + make_jwt(good()), "bearer"),
        "missing-header": lambda: [],
        "basic-scheme": lambda: bearer(make_jwt(good()), "Basic"),
        "scheme-only": lambda: [("Authorization", b"Bearer")],
        "empty-token": lambda: [("Authorization", b"Bearer   ")],
        "non-ascii": lambda: [("Authorization", b"Bearer caf\xc3\xa9")],
        "garbage": lambda: bearer("not.a.jwt"),
        "wrong-secret": lambda: bearer(make_jwt(good(), key=b"x" * 40)),
        "hs384": lambda: bearer(make_jwt(good(), alg="HS384")),
        "alg-none": lambda: bearer(jwt.encode(good(), None, algorithm="none")),
        "no-exp": lambda: bearer(make_jwt(good(exp=None))),
        "exp-float": lambda: bearer(raw_jwt(hs256, good(exp=now() + 300.5))),
        "exp-string": lambda: bearer(raw_jwt(hs256, good(exp=str(now() + 300)))),
        "exp-bool": lambda: bearer(raw_jwt(hs256, good(exp=True))),
        "claims-not-object": lambda: bearer(raw_jwt(hs256, [1, 2])),
        "expired-beyond-skew": lambda: bearer(make_jwt(good(exp=now() - 45))),
        "expired-within-skew": lambda: bearer(make_jwt(good(exp=now() - 15))),
        "nbf-beyond-skew": lambda: bearer(make_jwt(good(nbf=now() + 45))),
        "nbf-within-skew": lambda: bearer(make_jwt(good(nbf=now() + 15))),
        "nbf-string": lambda: bearer(raw_jwt(hs256, good(nbf="soon"))),
        "nbf-null": lambda: bearer(raw_jwt(hs256, good(nbf=None) | {"nbf": None})),
        "issuer-missing": lambda: bearer(make_jwt(good(iss=None))),
        "issuer-wrong": lambda: bearer(make_jwt(good(iss="other"))),
        "issuer-number": lambda: bearer(raw_jwt(hs256, good(iss=7))),
        "audience-missing": lambda: bearer(make_jwt(good(aud=None))),
        "audience-wrong": lambda: bearer(make_jwt(good(aud="other"))),
        "audience-list-hit": lambda: bearer(make_jwt(good(aud=["a", AUDIENCE]))),
        "audience-list-miss": lambda: bearer(make_jwt(good(aud=["a", "b"]))),
        "audience-number": lambda: bearer(raw_jwt(hs256, good(aud=5))),
        "order-expired-and-bad-issuer": lambda: bearer(make_jwt(good(exp=now() - 99, iss="o"))),
        "order-nbf-and-bad-audience": lambda: bearer(make_jwt(good(nbf=now() + 99, aud="o"))),
        "order-issuer-and-audience": lambda: bearer(make_jwt(good(iss="o", aud="o"))),
        "extra-header-fields": lambda: bearer(make_jwt(good(), kid="key-1")),
        "sub-object": lambda: bearer(raw_jwt(hs256, good(sub={"id": "u"}))),
        "sub-list": lambda: bearer(raw_jwt(hs256, good(sub=["u"]))),
        "sub-null": lambda: bearer(raw_jwt(hs256, good(sub=None) | {"sub": None})),
        "header-space-before-colon": lambda: [
            ("Authorization ", f"Bearer {make_jwt(good())}".encode())
        ],
        "header-tab-before-colon": lambda: [
            ("Authorization\t", f"Bearer {make_jwt(good())}".encode())
        ],
        "header-value-with-del": lambda: [
            ("Authorization", f"Bearer {make_jwt(good())}\x7f".encode())
        ],
    }


def _token_cases() -> dict[str, Case]:
    return {
        "valid": lambda: bearer(TOKEN),
        "trailing-spaces": lambda: bearer(TOKEN + "   "),
        "wrong": lambda: bearer(TOKEN + "x"),
        "missing-header": lambda: [],
        "scheme-only": lambda: [("Authorization", b"Bearer")],
        "token-scheme": lambda: bearer(TOKEN, "Token"),
        "jwt-against-token": lambda: bearer(make_jwt({"exp": int(time.time()) + 60})),
    }


JWT_CASES = _jwt_cases()
TOKEN_CASES = _token_cases()


def _jwt_flags(files: Path) -> list[str]:
    return [
        "--ws-auth", "signed-bearer-token", "--ws-shared-secret-file", str(files / "secret"),
        "--ws-issuer", f" {ISSUER} ", "--ws-audience", AUDIENCE,
    ]  # fmt: skip


def _token_flags(files: Path) -> list[str]:
    return ["--ws-auth", "capability-token", "--ws-token-file", str(files / "token")]


@pytest.fixture(scope="module")
def auth_servers(files: Path) -> Iterator[dict[tuple[str, str], int]]:
    """Ports of ours and the reference, each with JWT and with capability-token auth."""
    require_reference()
    servers: dict[tuple[str, str], ServerProcess] = {}
    commands = {"ours": ours_command, "reference": reference_command}
    try:
        for kind, command in commands.items():
            for scheme, flags in (("jwt", _jwt_flags(files)), ("token", _token_flags(files))):
                servers[kind, scheme] = ServerProcess(
                    command(extra=flags), files, f"{kind}-{scheme}"
                )
        yield {key: int(server.url.rsplit(":", 1)[1]) for key, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()


@pytest.mark.reference
@pytest.mark.parametrize("case", sorted(JWT_CASES))
async def test_auth_jwt_upgrade_matches_reference(
    case: str, auth_servers: dict[tuple[str, str], int]
) -> None:
    headers = JWT_CASES[case]()
    ours = await upgrade(auth_servers["ours", "jwt"], headers)
    reference = await upgrade(auth_servers["reference", "jwt"], headers)
    assert ours == reference
    expect_ok = case in {
        "valid", "lowercase-scheme-double-space", "expired-within-skew", "nbf-within-skew",
        "nbf-null", "audience-list-hit", "extra-header-fields", "sub-null",
    }  # fmt: skip
    assert (ours[0] == 101) == expect_ok, ours


@pytest.mark.reference
@pytest.mark.parametrize("case", sorted(TOKEN_CASES))
async def test_auth_token_upgrade_matches_reference(
    case: str, auth_servers: dict[tuple[str, str], int]
) -> None:
    headers = TOKEN_CASES[case]()
    ours = await upgrade(auth_servers["ours", "token"], headers)
    reference = await upgrade(auth_servers["reference", "token"], headers)
    assert ours == reference
    assert (ours[0] == 101) == (case in {"valid", "trailing-spaces"}), ours


@pytest.mark.reference
@pytest.mark.parametrize("sub", [7, True, 1.5], ids=["number", "bool", "float"])
async def test_auth_jwt_sub_must_be_string(
    sub: object, auth_servers: dict[tuple[str, str], int]
) -> None:
    """Deliberate difference `jwt_sub_must_be_string`: RFC 7519 makes `sub` a string; the
    reference accepts a number or a boolean there (and objects or lists it refuses, as we do)."""
    claims = {"exp": int(time.time()) + 300, "iss": ISSUER, "aud": AUDIENCE, "sub": sub}
    headers = bearer(raw_jwt({"alg": "HS256", "typ": "JWT"}, claims))
    assert await upgrade(auth_servers["ours", "jwt"], headers) == (401, "invalid websocket jwt")
    assert (await upgrade(auth_servers["reference", "jwt"], headers))[0] == 101


async def _plain(port: int, request: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        line = await asyncio.wait_for(reader.readline(), 10)
        return int(line.split(b" ", 2)[1])
    finally:
        writer.close()


@pytest.mark.reference
async def test_auth_leaves_readyz_origin_and_routing_alone(
    auth_servers: dict[tuple[str, str], int],
) -> None:
    requests = {
        "readyz": b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n",
        "readyz-bad-token": b"GET /readyz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer no\r\n\r\n",
        "origin-with-token": (
            f"GET / HTTP/1.1\r\nHost: x\r\nOrigin: http://localhost\r\n"
            f"Authorization: Bearer {TOKEN}\r\n\r\n"
        ).encode(),
        "other-path": b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n",
        "no-upgrade": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "post": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    }
    for name, request in requests.items():
        ours = await _plain(auth_servers["ours", "token"], request)
        reference = await _plain(auth_servers["reference", "token"], request)
        assert ours == reference, name
    assert await _plain(auth_servers["ours", "token"], requests["readyz"]) == 200
    # a token in the query string is not a token
    ours_query = await upgrade(auth_servers["ours", "token"], [], f"/?token={TOKEN}")
    reference_query = await upgrade(auth_servers["reference", "token"], [], f"/?token={TOKEN}")
    assert ours_query == reference_query == (401, "missing websocket bearer token")


# -- deliberate differences --------------------------------------------------------------------


async def _initialize(url: str, token: str, resume: str | None = None) -> dict[str, Any]:
    """`initialize` on a fresh connection; a resume retries while the server has not yet
    noticed that the session's previous connection closed."""
    for _ in range(100):
        answer = await _initialize_once(url, token, resume)
        if "already attached" not in answer.get("error", {}).get("message", ""):
            return answer
        await asyncio.sleep(0.05)
    return answer


async def _initialize_once(url: str, token: str, resume: str | None) -> dict[str, Any]:
    headers = f"Authorization: Bearer {token}\r\n".encode()
    async with await RawWebSocket.connect(url, headers) as ws:
        params: dict[str, Any] = {"clientName": "auth-test"}
        if resume is not None:
            params["resumeSessionId"] = resume
        await ws.send_text(json.dumps({"id": 1, "method": "initialize", "params": params}))
        answer = await ws.recv_text()
        assert answer is not None
        result: dict[str, Any] = json.loads(answer)
        return result


async def test_auth_resume_only_by_the_same_principal(files: Path) -> None:
    """Deliberate difference `resume_same_principal` (JWT `sub`, else the token itself)."""
    async with running_server("ours", files, extra=_jwt_flags(files)) as server:

        def token(sub: str | None, exp_offset: int = 300) -> str:
            claims: dict[str, Any] = {
                "exp": int(time.time()) + exp_offset,
                "iss": ISSUER,
                "aud": AUDIENCE,
            }
            if sub is not None:
                claims["sub"] = sub
            return make_jwt(claims)

        created = await _initialize(server.url, token("alice"))
        session = created["result"]["sessionId"]
        # alice again, with a fresh token: resumes
        resumed = await _initialize(server.url, token("alice", 600), session)
        assert resumed["result"]["sessionId"] == session
        # bob: told the session does not exist, as for an unknown id
        stolen = await _initialize(server.url, token("bob"), session)
        unknown = await _initialize(server.url, token("bob"), "not-a-session")
        assert stolen["error"]["code"] == unknown["error"]["code"]
        assert stolen["error"]["message"] == f"unknown session id {session}"
        # without `sub`, only the very same token
        anonymous = token(None)
        created = await _initialize(server.url, anonymous)
        session = created["result"]["sessionId"]
        other = await _initialize(server.url, token(None, 400), session)
        assert "error" in other
        same = await _initialize(server.url, anonymous, session)
        assert same["result"]["sessionId"] == session


@pytest.mark.reference
async def test_auth_reference_lets_any_principal_resume(files: Path) -> None:
    """What `resume_same_principal` changes: the reference hands bob alice's session."""
    require_reference()
    async with running_server("reference", files, extra=_jwt_flags(files)) as server:
        claims = {"exp": int(time.time()) + 300, "iss": ISSUER, "aud": AUDIENCE}
        created = await _initialize(server.url, make_jwt(claims | {"sub": "alice"}))
        session = created["result"]["sessionId"]
        stolen = await _initialize(server.url, make_jwt(claims | {"sub": "bob"}), session)
        assert stolen["result"]["sessionId"] == session


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]"])
def test_auth_non_loopback_listen_requires_auth_or_consent(host: str, files: Path) -> None:
    """Deliberate difference `remote_listen_needs_auth`."""
    listen = f"ws://{host}:0"
    code, line = _outcome(ours_command(listen))
    assert code == 1
    assert line.startswith("Error: refusing to listen on non-loopback address")
    assert "--allow-unauthenticated-remote" in line


async def _starts(listen: str, flags: list[str]) -> bytes:
    process = await asyncio.create_subprocess_exec(
        *ours_command(listen, flags),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        return await asyncio.wait_for(process.stdout.readline(), 30)
    finally:
        process.terminate()
        assert await process.wait() == 0


@pytest.mark.reference
async def test_auth_reference_serves_non_loopback_without_auth(files: Path) -> None:
    """What `remote_listen_needs_auth` changes: the reference starts on 0.0.0.0 unauthenticated."""
    require_reference()
    process = await asyncio.create_subprocess_exec(
        *reference_command("ws://0.0.0.0:0"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), 30)
    finally:
        process.terminate()
        await process.wait()
    assert line.startswith(b"ws://0.0.0.0:")


async def test_auth_non_loopback_listen_starts_with_auth_or_consent(files: Path) -> None:
    consent = await _starts("ws://0.0.0.0:0", ["--allow-unauthenticated-remote"])
    assert consent.startswith(b"ws://0.0.0.0:")
    authenticated = await _starts("ws://0.0.0.0:0", _token_flags(files))
    assert authenticated.startswith(b"ws://0.0.0.0:")
