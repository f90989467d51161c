"""The hybrid Noise IK handshake (relay.noise): behaviour, failure modes, and byte-exact replay
of handshakes captured against the real codex 0.169.0 and 0.171.0 binaries.

How tests/data/relay_noise_vectors.json was captured (throwaway script, not in the repo): one
aiohttp process on 127.0.0.1 played registry (`/register`, `/connect`, `/validate` -> valid)
and rendezvous (one WebSocket route per role; frames hand-encoded per RELAY.md §4). Our
handshake objects ran with a recording `KeySource`, so every random input (ephemeral keypairs,
ML-KEM encapsulations) was saved next to the static private keys.

* initiator_vs_real_executor: `codex exec-server --remote http://127.0.0.1:PORT
  --environment-id test1` (bearer from `CODEX_API_KEY`) registered its static key and opened
  the rendezvous WebSocket; our `NoiseInitiator` sent `resume` + `handshake(msg1)` carrying an
  authorization, the executor posted it to `/validate` and answered msg2; JSON-RPC then ran
  through `RecordSealer`/`RecordOpener`: initialize, two requests coalesced into one record, a
  100 KB write starting mid-record, a 400 KB fs/writeFile sent with records out of order and a
  400 KB fs/readFile answered in nine records.
* responder_vs_real_harness: `codex app-server` with `CODEX_EXEC_SERVER_NOISE_REGISTRY_URL`,
  `..._ENVIRONMENT_ID`, `..._AUTH_TOKEN` (and `CODEX_API_KEY=sk-dummy`, a temporary
  `CODEX_HOME`) connected eagerly after `initialize`; `/connect` returned our responder's
  static key; our `NoiseResponder` read msg1 and answered msg2; the harness sent initialize as
  data seq 0, took our canned initialize response, and `environment/status` reported ready.

Replaying the recorded key material makes our side deterministic, so the tests below check
msg1/msg2 and the first transport records byte for byte against what the real peer produced
or accepted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from execserver.relay.noise import (
    MAX_NOISE_MESSAGE,
    PROTOCOL_NAME,
    REJECTION_SIGNAL,
    SUITE,
    CipherState,
    NoiseDecryptError,
    NoiseError,
    NoiseIdentity,
    NoiseInitiator,
    NoisePublicKey,
    NoiseResponder,
    SymmetricState,
    prologue,
)
from execserver.relay.records import RecordOpener, RecordSealer

VECTORS_PATH = Path(__file__).resolve().parents[1] / "data" / "relay_noise_vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))

MSG1_OVERHEAD = 3568
MSG2_OVERHEAD = 3424

EXECUTOR = NoiseIdentity.generate()
HARNESS = NoiseIdentity.generate()
PROLOGUE = prologue("test1", "reg_1", "65af7fd3-ad8c-4f1a-be0b-17fe69329d1a")


def handshake(
    payload1: bytes = b"authz", payload2: bytes = b""
) -> tuple[NoiseInitiator, NoiseResponder, bytes, bytes]:
    initiator = NoiseInitiator(HARNESS, EXECUTOR.public_key, PROLOGUE)
    responder = NoiseResponder(EXECUTOR, PROLOGUE)
    msg1 = initiator.write_message1(payload1)
    assert responder.read_message1(msg1) == payload1
    msg2 = responder.write_message2(payload2)
    assert initiator.read_message2(msg2) == payload2
    return initiator, responder, msg1, msg2


def flip(message: bytes, offset: int) -> bytes:
    tampered = bytearray(message)
    tampered[offset] ^= 0x01
    return bytes(tampered)


# -- behaviour ---------------------------------------------------------------------------------


def test_noise_handshake_delivers_payloads_and_authenticates_the_initiator() -> None:
    """msg1 carries the authorization, msg2 its payload; the responder learns the harness key."""
    initiator = NoiseInitiator(HARNESS, EXECUTOR.public_key, PROLOGUE)
    responder = NoiseResponder(EXECUTOR, PROLOGUE)
    assert not initiator.complete
    msg1 = initiator.write_message1(b"authorization-token")
    assert responder.read_message1(msg1) == b"authorization-token"
    assert responder.initiator_key == HARNESS.public_key
    assert not responder.complete
    msg2 = responder.write_message2(b"hello harness")
    assert initiator.read_message2(msg2) == b"hello harness"
    assert initiator.complete and responder.complete
    assert initiator.handshake_hash == responder.handshake_hash
    assert initiator.responder_key == EXECUTOR.public_key


def test_noise_split_keys_cross_work_in_both_directions() -> None:
    """Initiator sends with k1 and receives with k2; the responder the reverse."""
    initiator, responder, _, _ = handshake()
    to_executor, to_harness = initiator.transport(), responder.transport()
    for i in range(3):
        record = to_executor.send.encrypt(b"request %d" % i)
        assert to_harness.receive.decrypt(record) == b"request %d" % i
        reply = to_harness.send.encrypt(b"reply %d" % i)
        assert to_executor.receive.decrypt(reply) == b"reply %d" % i
    # The two directions use different keys: a record cannot be read back by its sender.
    own = to_executor.send.encrypt(b"x")
    with pytest.raises(NoiseDecryptError):
        to_executor.receive.decrypt(own)


def test_noise_message_lengths_match_the_binaries() -> None:
    """msg1 = 3568 + payload, msg2 = 3424 (+ payload); the 41-byte rejection signal fits."""
    _, _, msg1, msg2 = handshake(b"a" * 43)
    assert len(msg1) == MSG1_OVERHEAD + 43
    assert len(msg2) == MSG2_OVERHEAD
    _, _, _, rejected = handshake(b"", REJECTION_SIGNAL)
    assert len(rejected) == MSG2_OVERHEAD + 41 == 3465


def test_noise_rejection_signal_reaches_the_initiator() -> None:
    """An executor whose registry answered 401 completes msg2 with the rejection signal."""
    assert REJECTION_SIGNAL == b"codex-registry-authentication-rejected/v1"
    initiator, _, _, _ = handshake(b"authz", REJECTION_SIGNAL)
    assert initiator.complete


MSG1_REGIONS = {
    "skem-ciphertext": 500,
    "e-x25519": 1088 + 5,
    "e-mlkem768": 1120 + 600,
    "s-x25519": 2304 + 3,
    "s-x25519-tag": 2304 + 40,
    "s-mlkem768": 2352 + 700,
    "s-mlkem768-tag": 2352 + 1190,
    "payload": 3552 + 1,
    "payload-tag": -1,
}
MSG2_REGIONS = {
    "ekem-ciphertext": 100,
    "skem-ciphertext": 1088 + 200,
    "skem-tag": 1088 + 1095,
    "e-x25519": 2192 + 7,
    "e-mlkem768": 2224 + 900,
    "payload-tag": -1,
}


@pytest.mark.parametrize("offset", MSG1_REGIONS.values(), ids=MSG1_REGIONS.keys())
def test_noise_tampered_msg1_is_rejected(offset: int) -> None:
    """One flipped bit anywhere in msg1 makes the responder fail with NoiseError."""
    initiator = NoiseInitiator(HARNESS, EXECUTOR.public_key, PROLOGUE)
    msg1 = initiator.write_message1(b"authz")
    responder = NoiseResponder(EXECUTOR, PROLOGUE)
    with pytest.raises(NoiseError):
        responder.read_message1(flip(msg1, offset))
    with pytest.raises(NoiseError):
        responder.initiator_key  # noqa: B018


@pytest.mark.parametrize("offset", MSG2_REGIONS.values(), ids=MSG2_REGIONS.keys())
def test_noise_tampered_msg2_is_rejected(offset: int) -> None:
    """One flipped bit anywhere in msg2 makes the initiator fail with NoiseError."""
    initiator = NoiseInitiator(HARNESS, EXECUTOR.public_key, PROLOGUE)
    responder = NoiseResponder(EXECUTOR, PROLOGUE)
    responder.read_message1(initiator.write_message1(b"authz"))
    msg2 = responder.write_message2()
    with pytest.raises(NoiseError):
        initiator.read_message2(flip(msg2, offset))
    assert not initiator.complete


@pytest.mark.parametrize("change", ["truncated", "extended", "header-only", "empty"])
def test_noise_wrong_length_messages_are_rejected(change: str) -> None:
    """Messages cut short or with trailing bytes fail cleanly."""
    msg1 = NoiseInitiator(HARNESS, EXECUTOR.public_key, PROLOGUE).write_message1(b"authz")
    bad = {
        "truncated": msg1[:-1],
        "extended": msg1 + b"\x00",
        "header-only": msg1[:2000],
        "empty": b"",
    }[change]
    with pytest.raises(NoiseError):
        NoiseResponder(EXECUTOR, PROLOGUE).read_message1(bad)


def test_noise_other_prologue_fails_authentication() -> None:
    """A handshake bound to another stream id does not authenticate."""
    msg1 = NoiseInitiator(HARNESS, EXECUTOR.public_key, PROLOGUE).write_message1(b"authz")
    other = prologue("test1", "reg_1", "another-stream")
    with pytest.raises(NoiseDecryptError):
        NoiseResponder(EXECUTOR, other).read_message1(msg1)


def test_noise_other_executor_key_fails_authentication() -> None:
    """msg1 pinned to one executor key cannot be read with another identity."""
    msg1 = NoiseInitiator(HARNESS, EXECUTOR.public_key, PROLOGUE).write_message1(b"authz")
    with pytest.raises(NoiseDecryptError):
        NoiseResponder(NoiseIdentity.generate(), PROLOGUE).read_message1(msg1)


def test_noise_out_of_order_use_raises() -> None:
    """Each role may only run its own messages, once, in order."""
    initiator = NoiseInitiator(HARNESS, EXECUTOR.public_key, PROLOGUE)
    responder = NoiseResponder(EXECUTOR, PROLOGUE)
    with pytest.raises(NoiseError):
        initiator.read_message2(b"\x00" * MSG2_OVERHEAD)
    with pytest.raises(NoiseError):
        responder.write_message2()
    with pytest.raises(NoiseError):
        initiator.transport()
    msg1 = initiator.write_message1(b"authz")
    with pytest.raises(NoiseError):
        initiator.write_message1(b"authz")
    responder.read_message1(msg1)
    with pytest.raises(NoiseError):
        responder.read_message1(msg1)
    initiator.read_message2(responder.write_message2())
    with pytest.raises(NoiseError):
        initiator.read_message2(b"")


def test_noise_failed_handshake_stays_failed() -> None:
    """After one failure the handshake object refuses further use."""
    initiator = NoiseInitiator(HARNESS, EXECUTOR.public_key, PROLOGUE)
    msg1 = initiator.write_message1(b"authz")
    responder = NoiseResponder(EXECUTOR, PROLOGUE)
    with pytest.raises(NoiseDecryptError):
        responder.read_message1(flip(msg1, -1))
    with pytest.raises(NoiseError, match="already failed"):
        responder.read_message1(msg1)


def test_noise_all_zero_x25519_result_is_a_noise_error() -> None:
    """A low-order executor X25519 key makes the shared secret zero: NoiseError, not ValueError."""
    bad = NoisePublicKey(bytes(32), EXECUTOR.public_key.mlkem768)
    initiator = NoiseInitiator(HARNESS, bad, PROLOGUE)
    with pytest.raises(NoiseError) as caught:
        initiator.write_message1(b"authz")
    assert type(caught.value) is NoiseError


def test_noise_invalid_mlkem_key_is_a_noise_error() -> None:
    """An ML-KEM key that does not parse is refused when the handshake is built."""
    bad = NoisePublicKey(EXECUTOR.public_key.x25519, b"\xff" * 1184)
    with pytest.raises(NoiseError):
        NoiseInitiator(HARNESS, bad, PROLOGUE)


def test_noise_message_size_limit() -> None:
    """No handshake message may exceed 65535 bytes, written or read."""
    largest = MAX_NOISE_MESSAGE - MSG1_OVERHEAD
    msg1 = NoiseInitiator(HARNESS, EXECUTOR.public_key, PROLOGUE).write_message1(b"a" * largest)
    assert len(msg1) == MAX_NOISE_MESSAGE
    with pytest.raises(NoiseError):
        NoiseInitiator(HARNESS, EXECUTOR.public_key, PROLOGUE).write_message1(b"a" * (largest + 1))
    with pytest.raises(NoiseError, match="too large"):
        NoiseResponder(EXECUTOR, PROLOGUE).read_message1(msg1 + b"\x00")


@pytest.mark.parametrize(
    ("x25519", "mlkem768"), [(b"\x01" * 31, b"\x02" * 1184), (b"\x01" * 32, b"\x02" * 1183)]
)
def test_noise_public_key_validates_lengths(x25519: bytes, mlkem768: bytes) -> None:
    """Public keys are exactly 32 + 1184 bytes."""
    with pytest.raises(NoiseError):
        NoisePublicKey(x25519, mlkem768)


def test_noise_identity_round_trips_through_private_bytes() -> None:
    """An identity rebuilt from its private bytes has the same public key."""
    x25519, seed = HARNESS.private_bytes()
    assert (len(x25519), len(seed)) == (32, 64)
    assert NoiseIdentity.from_private_bytes(x25519, seed).public_key == HARNESS.public_key
    with pytest.raises(NoiseError):
        NoiseIdentity.from_private_bytes(x25519, seed[:-1])
    assert "NoiseIdentity(" in repr(HARNESS)
    assert x25519.hex() not in repr(HARNESS)


def test_noise_prologue_is_length_prefixed() -> None:
    """The prologue is u64_be(len) || part for the label, env id, registration id, stream id."""
    expected = (
        (32).to_bytes(8, "big")
        + b"codex-exec-server-relay-noise/v1"
        + (5).to_bytes(8, "big")
        + b"test1"
        + (3).to_bytes(8, "big")
        + b"reg"
        + (5).to_bytes(8, "big")
        + b"sid\xc3\xa9"
    )
    assert prologue("test1", "reg", "sid\u00e9") == expected
    assert prologue("", "", "")[-24:] == bytes(24)
    with pytest.raises(NoiseError):
        prologue("test1", "reg", "\ud800")


def test_noise_symmetric_state_starts_from_the_hashed_protocol_name() -> None:
    """The 43-byte protocol name is longer than HASHLEN, so h = ck = SHA256(name)."""
    assert len(PROTOCOL_NAME) == 43
    assert "X25519" in SUITE and "X25519" not in PROTOCOL_NAME  # the suite tag is not hashed
    state = SymmetricState()
    assert state.h == state.ck == hashlib.sha256(PROTOCOL_NAME.encode()).digest()
    assert not state.has_key
    assert SymmetricState(b"Noise_short").h == b"Noise_short".ljust(32, b"\x00")


def test_noise_split_is_rfc5869_hkdf_of_the_chaining_key() -> None:
    """Split yields HKDF(salt=ck, ikm=empty) output blocks 1 and 2 as the two keys."""
    state = SymmetricState()
    state.mix_key(b"\x07" * 32)
    okm = HKDF(hashes.SHA256(), 64, salt=state.ck, info=b"").derive(b"")
    first, second = state.split()
    nonce = bytes(12)
    assert first.encrypt(b"p") == AESGCM(okm[:32]).encrypt(nonce, b"p", None)
    assert second.encrypt(b"p") == AESGCM(okm[32:]).encrypt(nonce, b"p", None)


def test_noise_mix_key_and_hash_follow_rfc5869_hkdf() -> None:
    """MixKey takes (ck, k) and MixKeyAndHash (ck, hashed temp, k) from HKDF(salt=ck)."""
    ikm = b"\x42" * 32
    state = SymmetricState()
    ck0, h0 = state.ck, state.h
    okm = HKDF(hashes.SHA256(), 96, salt=ck0, info=b"").derive(ikm)
    state.mix_key_and_hash(ikm)
    assert state.ck == okm[:32]
    assert state.h == hashlib.sha256(h0 + okm[32:64]).digest()
    h1 = state.h
    ciphertext = state.encrypt_and_hash(b"payload")
    assert ciphertext == AESGCM(okm[64:]).encrypt(bytes(12), b"payload", h1)
    assert state.h == hashlib.sha256(h1 + ciphertext).digest()

    okm = HKDF(hashes.SHA256(), 64, salt=state.ck, info=b"").derive(ikm)
    h2 = state.h
    state.mix_key(ikm)
    assert (state.ck, state.h) == (okm[:32], h2)
    assert state.encrypt_and_hash(b"p") == AESGCM(okm[32:]).encrypt(bytes(12), b"p", h2)


def test_noise_cipher_nonce_is_four_zero_bytes_and_a_big_endian_counter() -> None:
    """Record n is sealed with 0x00000000 || u64_be(n) and no associated data."""
    key = bytes(range(32))
    cipher = CipherState(key)
    for n in range(300):
        record = cipher.encrypt(b"record")
        if n in (0, 1, 255, 256, 299):
            expected_nonce = bytes(4) + n.to_bytes(8, "big")
            assert record == AESGCM(key).encrypt(expected_nonce, b"record", None)
    assert cipher.nonce == 300
    far = CipherState(key, nonce=0x0102030405060708)
    assert far.encrypt(b"x") == AESGCM(key).encrypt(
        bytes.fromhex("000000000102030405060708"), b"x", None
    )


def test_noise_cipher_refuses_nonce_exhaustion() -> None:
    """The last usable nonce is 2^64 - 2; then the cipher state is spent."""
    key = bytes(32)
    sender = CipherState(key, nonce=2**64 - 2)
    receiver = CipherState(key, nonce=2**64 - 2)
    assert receiver.decrypt(sender.encrypt(b"last")) == b"last"
    with pytest.raises(NoiseError, match="exhausted"):
        sender.encrypt(b"one more")
    with pytest.raises(NoiseError, match="exhausted"):
        receiver.decrypt(bytes(17))


def test_noise_cipher_failed_decrypt_does_not_advance() -> None:
    """A forged record fails and leaves the counter for the genuine one."""
    sender, receiver = CipherState(bytes(32)), CipherState(bytes(32))
    genuine = sender.encrypt(b"genuine")
    with pytest.raises(NoiseDecryptError):
        receiver.decrypt(flip(genuine, 0))
    with pytest.raises(NoiseDecryptError):
        receiver.decrypt(b"short")
    assert receiver.nonce == 0
    assert receiver.decrypt(genuine) == b"genuine"


# -- replay of the real binaries' handshakes ---------------------------------------------------


class ScriptedKeys:
    """A KeySource that hands out recorded key material, in order, exactly once."""

    def __init__(self, ephemeral: dict[str, str], encapsulations: list[dict[str, str]]) -> None:
        self._ephemerals = iter([identity(ephemeral)])
        self._encapsulations: Iterator[dict[str, str]] = iter(encapsulations)
        self.targets: list[bytes] = []

    def ephemeral(self) -> NoiseIdentity:
        return next(self._ephemerals)

    def encapsulate(self, public_key: MLKEM768PublicKey) -> tuple[bytes, bytes]:
        self.targets.append(public_key.public_bytes_raw())
        recorded = next(self._encapsulations)
        return bytes.fromhex(recorded["shared_secret"]), bytes.fromhex(recorded["ciphertext"])

    def exhausted(self) -> bool:
        return next(self._ephemerals, None) is None and next(self._encapsulations, None) is None


def identity(fields: dict[str, str]) -> NoiseIdentity:
    return NoiseIdentity.from_private_bytes(
        bytes.fromhex(fields["x25519_private"]), bytes.fromhex(fields["mlkem768_seed"])
    )


def public(fields: dict[str, str]) -> NoisePublicKey:
    return NoisePublicKey(bytes.fromhex(fields["x25519"]), bytes.fromhex(fields["mlkem768"]))


def by_version(section: str) -> list[Any]:
    return [pytest.param(v, id=v["codex_version"]) for v in VECTORS[section]]


def test_noise_vectors_cover_both_binaries() -> None:
    """The vector file holds both roles for codex 0.169.0 and 0.171.0."""
    for section in ("initiator_vs_real_executor", "responder_vs_real_harness"):
        assert [v["codex_version"] for v in VECTORS[section]] == ["0.169.0", "0.171.0"]
    assert "0.169.0" in VECTORS["_doc"]["what"]


@pytest.mark.parametrize("vector", by_version("initiator_vs_real_executor"))
def test_noise_initiator_replays_handshake_with_real_executor(vector: dict[str, Any]) -> None:
    """Our initiator reproduces msg1, accepts the real executor's msg2 and shares its records."""
    pro = prologue(
        vector["environment_id"], vector["executor_registration_id"], vector["stream_id"]
    )
    assert pro.hex() == vector["prologue"]
    executor_key = public(vector["executor_static_public"])
    keys = ScriptedKeys(vector["initiator_ephemeral"], vector["initiator_encapsulations"])
    initiator = NoiseInitiator(identity(vector["initiator_static"]), executor_key, pro, keys=keys)

    msg1 = initiator.write_message1(vector["authorization"].encode())
    assert msg1.hex() == vector["msg1"]
    assert keys.targets == [executor_key.mlkem768]  # skem went to the executor's static key
    msg2 = bytes.fromhex(vector["msg2"])
    assert len(msg2) == MSG2_OVERHEAD
    assert initiator.read_message2(msg2) == b""
    assert initiator.handshake_hash.hex() == vector["handshake_hash"]
    assert keys.exhausted()

    transport = initiator.transport()
    sent, received = vector["sent_record_0"], vector["received_record_0"]
    assert RecordSealer(transport.send).seal(sent["message"].encode()) == [
        (0, bytes.fromhex(sent["ciphertext"]))
    ]
    opened = RecordOpener(transport.receive).open(0, bytes.fromhex(received["ciphertext"]))
    assert opened == [received["message"].encode()]
    info = json.loads(opened[0])["result"]["environmentInfo"]
    assert info["executorVersion"] == vector["codex_version"]
    # The frames as the executor sent them carry exactly these bytes.
    frames = vector["real_frames"]
    assert bytes.fromhex(frames["executor_first_data"]).endswith(
        bytes.fromhex(received["ciphertext"])
    )
    assert (frames["executor_handshake_msg2_header"] + vector["msg2"]).startswith("0801")


@pytest.mark.parametrize("vector", by_version("responder_vs_real_harness"))
def test_noise_responder_replays_handshake_with_real_harness(vector: dict[str, Any]) -> None:
    """Our responder reads the real harness's msg1, reproduces msg2 and reads its first record."""
    pro = prologue(
        vector["environment_id"], vector["executor_registration_id"], vector["stream_id"]
    )
    assert pro.hex() == vector["prologue"]
    keys = ScriptedKeys(vector["responder_ephemeral"], vector["responder_encapsulations"])
    responder = NoiseResponder(identity(vector["responder_static"]), pro, keys=keys)

    msg1 = bytes.fromhex(vector["msg1"])
    authorization = vector["authorization"].encode()
    assert len(msg1) == MSG1_OVERHEAD + len(authorization)
    assert responder.read_message1(msg1) == authorization
    harness_key = public(vector["initiator_static_public"])
    assert responder.initiator_key == harness_key
    msg2 = responder.write_message2()
    assert msg2.hex() == vector["msg2"]
    # ekem went to the harness's ephemeral key (inside msg1), skem to its static key.
    assert keys.targets == [msg1[1120 : 1120 + 1184], harness_key.mlkem768]
    assert responder.handshake_hash.hex() == vector["handshake_hash"]
    assert keys.exhausted()

    transport = responder.transport()
    received, sent = vector["received_record_0"], vector["sent_record_0"]
    opened = RecordOpener(transport.receive).open(0, bytes.fromhex(received["ciphertext"]))
    assert opened == [received["message"].encode()]
    assert json.loads(opened[0]) == {
        "id": 1,
        "method": "initialize",
        "params": {"clientName": "codex-environment", "resumeSessionId": None},
    }
    assert RecordSealer(transport.send).seal(sent["message"].encode()) == [
        (0, bytes.fromhex(sent["ciphertext"]))
    ]
    frames = vector["real_frames"]
    assert bytes.fromhex(frames["harness_first_data"]).endswith(
        bytes.fromhex(received["ciphertext"])
    )
    assert frames["harness_resume"].endswith("3a00")  # empty RelayResume, RELAY.md §4


@pytest.mark.parametrize("vector", by_version("responder_vs_real_harness"))
def test_noise_real_harness_msg1_tampered_or_rebound_fails(vector: dict[str, Any]) -> None:
    """The real harness's msg1 fails on one flipped bit or under another stream's prologue."""
    static = identity(vector["responder_static"])
    msg1 = bytes.fromhex(vector["msg1"])
    pro = bytes.fromhex(vector["prologue"])
    with pytest.raises(NoiseDecryptError):
        NoiseResponder(static, pro).read_message1(flip(msg1, 3000))
    rebound = prologue(vector["environment_id"], vector["executor_registration_id"], "other")
    with pytest.raises(NoiseDecryptError):
        NoiseResponder(static, rebound).read_message1(msg1)
