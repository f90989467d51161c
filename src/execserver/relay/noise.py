"""The relay's hybrid post-quantum Noise IK handshake (RELAY.md §6), without I/O.

Owns the static identities and public keys, the prologue that binds a handshake to one
environment, registration and stream, the Noise symmetric and cipher states, the two handshake
roles (initiator = harness, responder = executor) and the transport ciphers they split into.

The pattern is `Noise_hybridIK_25519+MLKEM768_AESGCM_SHA256` as the codex binaries (clatter
2.2) speak it: X25519 and ML-KEM-768 key agreement both feed the chaining key, AES-256-GCM
protects everything after the first key. Each handshake message is a row of tokens in
`MESSAGE_PATTERNS`; one writer and one reader per token kind process it, so the two roles are
the same state machine run from opposite ends:

```
msg1  initiator -> responder   skem, e, es, s, ss, payload     3568 + len(payload) bytes
msg2  responder -> initiator   ekem, skem, e, ee, se, payload  3424 + len(payload) bytes
```

Every failure raises `NoiseError` (`NoiseDecryptError` when a ciphertext does not
authenticate); no `cryptography` exception escapes. A handshake that failed once refuses any
further use. Fresh key material (ephemeral keypairs, ML-KEM encapsulations) comes from a
`KeySource`, so tests can replay captured handshakes byte for byte. X25519, ML-KEM-768 and
AES-GCM come from pyca `cryptography`; SHA-256 and HMAC from the standard library (one-shot
OpenSSL calls, faster for 32-byte inputs).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "MAX_AUTHORIZATION_BYTES",
    "MAX_NOISE_MESSAGE",
    "MESSAGE_PATTERNS",
    "MLKEM768_CIPHERTEXT_BYTES",
    "MLKEM768_PUBLIC_KEY_BYTES",
    "MLKEM768_SEED_BYTES",
    "PROLOGUE_LABEL",
    "PROTOCOL_NAME",
    "REJECTION_SIGNAL",
    "SUITE",
    "TAG_BYTES",
    "X25519_KEY_BYTES",
    "CipherState",
    "KeySource",
    "NoiseDecryptError",
    "NoiseError",
    "NoiseIdentity",
    "NoiseInitiator",
    "NoisePublicKey",
    "NoiseResponder",
    "NoiseTransport",
    "SymmetricState",
    "SystemKeySource",
    "prologue",
]

SUITE: Final = "Noise_hybridIK_X25519+MLKEM768_AESGCM_SHA256"
"""The suite tag carried next to public keys in registry JSON (not hashed anywhere)."""
PROTOCOL_NAME: Final = "Noise_hybridIK_25519+MLKEM768_AESGCM_SHA256"
"""The Noise protocol name hashed into the initial handshake hash."""
PROLOGUE_LABEL: Final = b"codex-exec-server-relay-noise/v1"
MAX_AUTHORIZATION_BYTES: Final = 4096
"""Largest registry authorization (msg1 payload, UTF-8) the executor accepts."""
MAX_NOISE_MESSAGE: Final = 65535
"""Largest Noise message, handshake or transport, either side sends or accepts."""
REJECTION_SIGNAL: Final = b"codex-registry-authentication-rejected/v1"
"""msg2 payload an executor sends when the registry answered `/validate` with 401."""

X25519_KEY_BYTES: Final = 32
MLKEM768_PUBLIC_KEY_BYTES: Final = 1184
MLKEM768_CIPHERTEXT_BYTES: Final = 1088
MLKEM768_SEED_BYTES: Final = 64
TAG_BYTES: Final = 16
_MAX_NONCE: Final = 2**64 - 1  # reserved by Noise; reaching it ends the CipherState

MESSAGE_PATTERNS: Final[tuple[tuple[str, ...], ...]] = (
    ("skem", "e", "es", "s", "ss"),  # initiator -> responder, after the pre-message `<- s`
    ("ekem", "skem", "e", "ee", "se"),  # responder -> initiator
)
"""hybridIK as the codex binaries accept it; even rows are written by the initiator."""

_NONCE = struct.Struct(">4xQ")  # 4 zero bytes || u64 big-endian counter
_U64 = struct.Struct(">Q")


class NoiseError(Exception):
    """A Noise handshake or transport failure: malformed input, bad key, misuse, or exhaustion."""


class NoiseDecryptError(NoiseError):
    """A ciphertext did not authenticate (tampering, another prologue, or other keys)."""


def prologue(environment_id: str, executor_registration_id: str, stream_id: str) -> bytes:
    """Build the prologue binding a handshake to one environment, registration and stream.

    Args:
        environment_id: The registry environment id.
        executor_registration_id: The opaque id the registry returned on register/connect.
        stream_id: The relay stream id of this handshake.

    Returns:
        `u64_be(len) || part` for the label and the three UTF-8 encoded identifiers.

    Raises:
        NoiseError: An identifier cannot be encoded as UTF-8 (a lone surrogate).
    """
    try:
        parts = [p.encode() for p in (environment_id, executor_registration_id, stream_id)]
    except UnicodeEncodeError as exc:
        raise NoiseError(f"prologue identifier is not valid UTF-8: {exc}") from None
    out = bytearray()
    for part in (PROLOGUE_LABEL, *parts):
        out += _U64.pack(len(part))
        out += part
    return bytes(out)


@dataclass(frozen=True, slots=True)
class NoisePublicKey:
    """The public half of a Noise identity, as raw bytes (JSON encoding lives elsewhere).

    Attributes:
        x25519: The 32-byte X25519 public key.
        mlkem768: The 1184-byte ML-KEM-768 encapsulation key.

    Raises:
        NoiseError: On construction, when either component has the wrong type or length.
    """

    x25519: bytes
    mlkem768: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.x25519, bytes) or len(self.x25519) != X25519_KEY_BYTES:
            raise NoiseError(f"an X25519 public key is {X25519_KEY_BYTES} bytes")
        if not isinstance(self.mlkem768, bytes) or len(self.mlkem768) != MLKEM768_PUBLIC_KEY_BYTES:
            raise NoiseError(f"an ML-KEM-768 public key is {MLKEM768_PUBLIC_KEY_BYTES} bytes")

    def __repr__(self) -> str:
        return f"NoisePublicKey(x25519={self.x25519.hex()[:16]}…)"


class NoiseIdentity:
    """An X25519 + ML-KEM-768 keypair: a party's static identity, or one ephemeral key.

    Args:
        x25519: The X25519 private key.
        mlkem768: The ML-KEM-768 decapsulation key.
    """

    __slots__ = ("_mlkem768", "_public_key", "_x25519")

    def __init__(self, x25519: X25519PrivateKey, mlkem768: MLKEM768PrivateKey) -> None:
        self._x25519 = x25519
        self._mlkem768 = mlkem768
        self._public_key = NoisePublicKey(
            x25519.public_key().public_bytes_raw(), mlkem768.public_key().public_bytes_raw()
        )

    @classmethod
    def generate(cls) -> NoiseIdentity:
        """Generate a fresh random identity."""
        return cls(X25519PrivateKey.generate(), MLKEM768PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, x25519: bytes, mlkem768_seed: bytes) -> NoiseIdentity:
        """Rebuild an identity from `private_bytes()`.

        Args:
            x25519: The 32-byte raw X25519 private key.
            mlkem768_seed: The 64-byte ML-KEM-768 seed (FIPS 203 `d || z`).

        Raises:
            NoiseError: Either part has the wrong length.
        """
        if len(x25519) != X25519_KEY_BYTES or len(mlkem768_seed) != MLKEM768_SEED_BYTES:
            raise NoiseError("private key material has the wrong length")
        try:
            return cls(
                X25519PrivateKey.from_private_bytes(x25519),
                MLKEM768PrivateKey.from_seed_bytes(mlkem768_seed),
            )
        except ValueError as exc:
            raise NoiseError(f"invalid private key: {exc}") from None

    @property
    def public_key(self) -> NoisePublicKey:
        """The public half (raw bytes)."""
        return self._public_key

    @property
    def x25519_private_key(self) -> X25519PrivateKey:
        """The X25519 private key."""
        return self._x25519

    @property
    def mlkem768_private_key(self) -> MLKEM768PrivateKey:
        """The ML-KEM-768 decapsulation key."""
        return self._mlkem768

    def private_bytes(self) -> tuple[bytes, bytes]:
        """Return `(x25519 raw 32 bytes, ML-KEM-768 seed 64 bytes)`; keep them secret."""
        return self._x25519.private_bytes_raw(), self._mlkem768.private_bytes_raw()

    def __repr__(self) -> str:
        return f"NoiseIdentity({self._public_key!r})"


class KeySource(Protocol):
    """Where a handshake gets fresh key material: random in production, scripted in tests."""

    def ephemeral(self) -> NoiseIdentity:
        """Return a fresh ephemeral keypair."""
        ...

    def encapsulate(self, public_key: MLKEM768PublicKey) -> tuple[bytes, bytes]:
        """Encapsulate to `public_key`; return `(shared_secret, ciphertext)` (pyca's order)."""
        ...


class SystemKeySource:
    """The production `KeySource`: the operating system's randomness, through pyca."""

    def ephemeral(self) -> NoiseIdentity:
        """Generate a fresh ephemeral keypair."""
        return NoiseIdentity.generate()

    def encapsulate(self, public_key: MLKEM768PublicKey) -> tuple[bytes, bytes]:
        """Encapsulate to `public_key`; return `(shared_secret, ciphertext)`."""
        return public_key.encapsulate()


_SYSTEM_KEYS: Final = SystemKeySource()


class CipherState:
    """AES-256-GCM with Noise's implicit counter nonce (`0x00000000 || u64_be(n)`).

    One `AESGCM` object per key; the counter advances once per successful operation. No rekey:
    the state refuses to go on once the counter reaches 2^64 - 1.

    Args:
        key: The 32-byte key.
        nonce: The first counter value (Noise's SetNonce; tests start near the end).
    """

    __slots__ = ("_aead", "_n")

    def __init__(self, key: bytes, *, nonce: int = 0) -> None:
        if len(key) != 32:
            raise NoiseError("an AES-256-GCM key is 32 bytes")
        if not 0 <= nonce <= _MAX_NONCE:
            raise NoiseError("Noise nonce out of range")
        self._aead = AESGCM(key)
        self._n = nonce

    @property
    def nonce(self) -> int:
        """The counter the next operation will use."""
        return self._n

    def encrypt(self, plaintext: bytes | bytearray | memoryview, ad: bytes | None = None) -> bytes:
        """Encrypt one Noise message with the next nonce.

        Args:
            plaintext: At most `MAX_NOISE_MESSAGE - 16` bytes.
            ad: Associated data (the handshake hash during the handshake; none afterwards).

        Returns:
            The ciphertext followed by the 16-byte tag.

        Raises:
            NoiseError: The plaintext is too large or the nonce space is exhausted.
        """
        if len(plaintext) > MAX_NOISE_MESSAGE - TAG_BYTES:
            raise NoiseError("Noise plaintext is too large")
        n = self._n
        if n >= _MAX_NONCE:
            raise NoiseError("Noise nonce space exhausted")
        ciphertext = self._aead.encrypt(_NONCE.pack(n), plaintext, ad)
        self._n = n + 1
        return ciphertext

    def decrypt(self, ciphertext: bytes | bytearray | memoryview, ad: bytes | None = None) -> bytes:
        """Decrypt and authenticate one Noise message with the next nonce.

        The counter advances only when the ciphertext authenticates.

        Raises:
            NoiseDecryptError: The ciphertext is shorter than a tag or does not authenticate.
            NoiseError: The ciphertext is too large or the nonce space is exhausted.
        """
        size = len(ciphertext)
        if size > MAX_NOISE_MESSAGE:
            raise NoiseError("Noise ciphertext is too large")
        if size < TAG_BYTES:
            raise NoiseDecryptError("Noise ciphertext is shorter than its tag")
        n = self._n
        if n >= _MAX_NONCE:
            raise NoiseError("Noise nonce space exhausted")
        try:
            plaintext = self._aead.decrypt(_NONCE.pack(n), ciphertext, ad)
        except InvalidTag:
            raise NoiseDecryptError("Noise ciphertext failed authentication") from None
        self._n = n + 1
        return plaintext


def _hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
    """Noise's HKDF over HMAC-SHA256: two or three 32-byte outputs."""
    temp = hmac.digest(chaining_key, ikm, "sha256")
    out1 = hmac.digest(temp, b"\x01", "sha256")
    out2 = hmac.digest(temp, out1 + b"\x02", "sha256")
    if outputs == 2:
        return out1, out2
    return out1, out2, hmac.digest(temp, out2 + b"\x03", "sha256")


class SymmetricState:
    """Noise's SymmetricState over SHA-256: chaining key `ck`, handshake hash `h`, cipher.

    Args:
        protocol_name: The Noise protocol name (padded if ≤ 32 bytes, hashed otherwise).
    """

    __slots__ = ("_cipher", "ck", "h")

    def __init__(self, protocol_name: bytes = PROTOCOL_NAME.encode()) -> None:
        if len(protocol_name) <= 32:
            self.h = protocol_name.ljust(32, b"\x00")
        else:
            self.h = hashlib.sha256(protocol_name).digest()
        self.ck = self.h
        self._cipher: CipherState | None = None

    @property
    def has_key(self) -> bool:
        """Whether a key has been mixed in (payloads and static keys are then encrypted)."""
        return self._cipher is not None

    def mix_hash(self, data: bytes | bytearray | memoryview) -> None:
        """`h = SHA256(h || data)`."""
        digest = hashlib.sha256(self.h)
        digest.update(data)
        self.h = digest.digest()

    def mix_key(self, ikm: bytes) -> None:
        """`ck, k = HKDF(ck, ikm)`; the cipher restarts at nonce 0."""
        self.ck, key = _hkdf(self.ck, ikm, 2)
        self._cipher = CipherState(key)

    def mix_key_and_hash(self, ikm: bytes) -> None:
        """`ck, t, k = HKDF(ck, ikm)`; `MixHash(t)`; the cipher restarts at nonce 0."""
        self.ck, temp, key = _hkdf(self.ck, ikm, 3)
        self.mix_hash(temp)
        self._cipher = CipherState(key)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        """Encrypt with `h` as associated data (if keyed), then mix the ciphertext into `h`."""
        ciphertext = plaintext if self._cipher is None else self._cipher.encrypt(plaintext, self.h)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes | memoryview) -> bytes:
        """Decrypt with `h` as associated data (if keyed), then mix the ciphertext into `h`.

        Raises:
            NoiseDecryptError: The ciphertext does not authenticate.
        """
        if self._cipher is None:
            plaintext = bytes(ciphertext)
        else:
            plaintext = self._cipher.decrypt(ciphertext, self.h)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """Derive the two transport ciphers `(k1, k2)` from the chaining key."""
        key1, key2 = _hkdf(self.ck, b"", 2)
        return CipherState(key1), CipherState(key2)


class NoiseTransport(NamedTuple):
    """The two ciphers of an established channel, from one party's point of view."""

    send: CipherState
    receive: CipherState


class _Reader:
    """Consumes a received handshake message field by field."""

    __slots__ = ("_pos", "_view")

    def __init__(self, message: bytes | bytearray | memoryview) -> None:
        self._view = memoryview(message)
        self._pos = 0

    def take(self, size: int) -> memoryview:
        end = self._pos + size
        if end > len(self._view):
            raise NoiseError("handshake message is too short")
        field = self._view[self._pos : end]
        self._pos = end
        return field

    def rest(self) -> memoryview:
        field = self._view[self._pos :]
        self._pos = len(self._view)
        return field


def _x25519_public(raw: bytes) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise NoiseError(f"invalid X25519 public key: {exc}") from None


def _mlkem_public(raw: bytes) -> MLKEM768PublicKey:
    try:
        return MLKEM768PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise NoiseError(f"invalid ML-KEM-768 public key: {exc}") from None


class _Handshake:
    """The hybridIK state machine shared by both roles (see `MESSAGE_PATTERNS`)."""

    _initiator: bool

    def __init__(
        self,
        identity: NoiseIdentity,
        responder_key: NoisePublicKey,
        prologue_bytes: bytes,
        keys: KeySource,
    ) -> None:
        self._s = identity
        self._keys = keys
        self._e: NoiseIdentity | None = None
        self._rs: NoisePublicKey | None = None
        self._rs_x25519: X25519PublicKey | None = None
        self._rs_mlkem: MLKEM768PublicKey | None = None
        self._re_x25519: X25519PublicKey | None = None
        self._re_mlkem: MLKEM768PublicKey | None = None
        self._message = 0  # index of the next message in MESSAGE_PATTERNS; -1 once failed
        self._transport: NoiseTransport | None = None
        self._sym = SymmetricState()
        self._sym.mix_hash(prologue_bytes)
        # Pre-message `<- s`: the responder's static key, X25519 part first.
        self._sym.mix_hash(responder_key.x25519)
        self._sym.mix_hash(responder_key.mlkem768)

    def _set_remote_static(self, key: NoisePublicKey) -> None:
        self._rs_x25519 = _x25519_public(key.x25519)
        self._rs_mlkem = _mlkem_public(key.mlkem768)
        self._rs = key

    @property
    def complete(self) -> bool:
        """Whether both messages have been processed (the transport is available)."""
        return self._transport is not None

    @property
    def handshake_hash(self) -> bytes:
        """The current handshake hash `h` (the channel binding once complete)."""
        return self._sym.h

    def transport(self) -> NoiseTransport:
        """Return this party's `(send, receive)` ciphers.

        Raises:
            NoiseError: The handshake is not complete.
        """
        if self._transport is None:
            raise NoiseError("the Noise handshake is not complete")
        return self._transport

    # -- driving -----------------------------------------------------------------------------

    def _begin(self, index: int, writing: bool) -> None:
        if self._message == -1:
            raise NoiseError("the Noise handshake already failed")
        if self._message != index:
            raise NoiseError(f"Noise handshake message {index + 1} is out of order")
        if writing != (self._initiator == (index % 2 == 0)):
            raise NoiseError(f"Noise handshake message {index + 1} is the peer's to send")

    def _finish(self, index: int) -> None:
        self._message = index + 1
        if self._message == len(MESSAGE_PATTERNS):
            first, second = self._sym.split()
            self._transport = (
                NoiseTransport(first, second) if self._initiator else NoiseTransport(second, first)
            )

    def _write(self, index: int, payload: bytes) -> bytes:
        self._begin(index, writing=True)
        try:
            out = bytearray()
            for token in MESSAGE_PATTERNS[index]:
                self._WRITERS[token](self, token, out)
            out += self._sym.encrypt_and_hash(payload)
            if len(out) > MAX_NOISE_MESSAGE:
                raise NoiseError("Noise handshake message is too large")
        except BaseException:
            self._message = -1
            raise
        self._finish(index)
        return bytes(out)

    def _read(self, index: int, message: bytes | bytearray | memoryview) -> bytes:
        self._begin(index, writing=False)
        try:
            if len(message) > MAX_NOISE_MESSAGE:
                raise NoiseError("Noise handshake message is too large")
            reader = _Reader(message)
            for token in MESSAGE_PATTERNS[index]:
                self._READERS[token](self, token, reader)
            payload = reader.rest()
            if self._sym.has_key and len(payload) < TAG_BYTES:
                raise NoiseError("handshake message is too short")
            plaintext = self._sym.decrypt_and_hash(payload)
        except BaseException:
            self._message = -1
            raise
        self._finish(index)
        return plaintext

    def _encrypted_size(self, size: int) -> int:
        return size + TAG_BYTES if self._sym.has_key else size

    # -- tokens --------------------------------------------------------------------------------

    def _write_e(self, token: str, out: bytearray) -> None:
        self._e = self._keys.ephemeral()
        for part in (self._e.public_key.x25519, self._e.public_key.mlkem768):
            out += part
            self._sym.mix_hash(part)

    def _read_e(self, token: str, reader: _Reader) -> None:
        x25519 = bytes(reader.take(X25519_KEY_BYTES))
        self._sym.mix_hash(x25519)
        mlkem = bytes(reader.take(MLKEM768_PUBLIC_KEY_BYTES))
        self._sym.mix_hash(mlkem)
        self._re_x25519 = _x25519_public(x25519)
        self._re_mlkem = _mlkem_public(mlkem)

    def _write_s(self, token: str, out: bytearray) -> None:
        out += self._sym.encrypt_and_hash(self._s.public_key.x25519)
        out += self._sym.encrypt_and_hash(self._s.public_key.mlkem768)

    def _read_s(self, token: str, reader: _Reader) -> None:
        x25519 = self._sym.decrypt_and_hash(reader.take(self._encrypted_size(X25519_KEY_BYTES)))
        mlkem = self._sym.decrypt_and_hash(
            reader.take(self._encrypted_size(MLKEM768_PUBLIC_KEY_BYTES))
        )
        self._set_remote_static(NoisePublicKey(x25519, mlkem))

    def _dh(self, token: str, _: object) -> None:
        """Mix one X25519 agreement (`ee`, `es`, `se`, `ss`) into the chaining key.

        The first letter names the initiator's key, the second the responder's; each side
        combines its own private key with the peer's public one.
        """
        mine, theirs = (token[0], token[1]) if self._initiator else (token[1], token[0])
        local = self._s if mine == "s" else self._e
        remote = self._rs_x25519 if theirs == "s" else self._re_x25519
        if local is None or remote is None:
            raise NoiseError(f"Noise token {token!r} before its keys")
        try:
            shared = local.x25519_private_key.exchange(remote)
        except ValueError:
            raise NoiseError("X25519 produced an all-zero shared secret") from None
        self._sym.mix_key(shared)

    def _write_kem(self, token: str, out: bytearray) -> None:
        """`ekem`/`skem`: encapsulate to the peer's ephemeral/static ML-KEM key."""
        target = self._re_mlkem if token == "ekem" else self._rs_mlkem
        if target is None:
            raise NoiseError(f"Noise token {token!r} before its keys")
        try:
            shared, ciphertext = self._keys.encapsulate(target)
        except ValueError as exc:
            raise NoiseError(f"ML-KEM-768 encapsulation failed: {exc}") from None
        if len(ciphertext) != MLKEM768_CIPHERTEXT_BYTES or len(shared) != 32:
            raise NoiseError("ML-KEM-768 encapsulation returned the wrong sizes")
        if token == "ekem":
            out += ciphertext
            self._sym.mix_hash(ciphertext)
            self._sym.mix_key(shared)
        else:
            out += self._sym.encrypt_and_hash(ciphertext)
            self._sym.mix_key_and_hash(shared)

    def _read_kem(self, token: str, reader: _Reader) -> None:
        """`ekem`/`skem`: decapsulate with our ephemeral/static ML-KEM key."""
        own = self._e if token == "ekem" else self._s
        if own is None:
            raise NoiseError(f"Noise token {token!r} before its keys")
        if token == "ekem":
            ciphertext = bytes(reader.take(MLKEM768_CIPHERTEXT_BYTES))
            self._sym.mix_hash(ciphertext)
        else:
            ciphertext = self._sym.decrypt_and_hash(
                reader.take(self._encrypted_size(MLKEM768_CIPHERTEXT_BYTES))
            )
        try:
            shared = own.mlkem768_private_key.decapsulate(ciphertext)
        except ValueError as exc:
            raise NoiseError(f"ML-KEM-768 decapsulation failed: {exc}") from None
        if token == "ekem":
            self._sym.mix_key(shared)
        else:
            self._sym.mix_key_and_hash(shared)

    _WRITERS: Final[dict[str, Callable[[_Handshake, str, bytearray], None]]] = {
        "e": _write_e,
        "s": _write_s,
        "ee": _dh,
        "es": _dh,
        "se": _dh,
        "ss": _dh,
        "ekem": _write_kem,
        "skem": _write_kem,
    }
    _READERS: Final[dict[str, Callable[[_Handshake, str, _Reader], None]]] = {
        "e": _read_e,
        "s": _read_s,
        "ee": _dh,
        "es": _dh,
        "se": _dh,
        "ss": _dh,
        "ekem": _read_kem,
        "skem": _read_kem,
    }


class NoiseInitiator(_Handshake):
    """The harness side: knows the executor's static key from the registry, speaks first.

    Args:
        identity: The harness static identity.
        responder_key: The executor's static public key (from `/connect`).
        prologue: `prologue(environment_id, executor_registration_id, stream_id)`.
        keys: Source of ephemeral keys and encapsulations (random unless testing).

    Raises:
        NoiseError: `responder_key` is not a valid key.
    """

    _initiator = True

    def __init__(
        self,
        identity: NoiseIdentity,
        responder_key: NoisePublicKey,
        prologue: bytes,
        *,
        keys: KeySource = _SYSTEM_KEYS,
    ) -> None:
        super().__init__(identity, responder_key, prologue, keys)
        self._set_remote_static(responder_key)

    @property
    def responder_key(self) -> NoisePublicKey:
        """The executor static key this handshake is pinned to."""
        assert self._rs is not None
        return self._rs

    def write_message1(self, payload: bytes) -> bytes:
        """Build msg1 carrying `payload` (the registry authorization), 3568 + len bytes.

        Raises:
            NoiseError: Out of order, or the message would exceed 65535 bytes.
        """
        return self._write(0, payload)

    def read_message2(self, message: bytes | bytearray | memoryview) -> bytes:
        """Process msg2 and complete the handshake; return its payload (normally empty).

        Raises:
            NoiseDecryptError: The message does not authenticate.
            NoiseError: Malformed or out of order.
        """
        return self._read(1, message)


class NoiseResponder(_Handshake):
    """The executor side: learns and authenticates the harness static key from msg1.

    Args:
        identity: The executor static identity.
        prologue: `prologue(environment_id, executor_registration_id, stream_id)`.
        keys: Source of ephemeral keys and encapsulations (random unless testing).
    """

    _initiator = False

    def __init__(
        self, identity: NoiseIdentity, prologue: bytes, *, keys: KeySource = _SYSTEM_KEYS
    ) -> None:
        super().__init__(identity, identity.public_key, prologue, keys)

    @property
    def initiator_key(self) -> NoisePublicKey:
        """The harness static key msg1 authenticated (to send to `/validate`).

        Raises:
            NoiseError: msg1 has not been read successfully.
        """
        if self._rs is None or self._message < 1:
            raise NoiseError("the initiator's static key is known only after msg1")
        return self._rs

    def read_message1(self, message: bytes | bytearray | memoryview) -> bytes:
        """Process msg1; return its payload (the registry authorization, unchecked).

        Raises:
            NoiseDecryptError: The message does not authenticate (for instance, another
                prologue or another executor key).
            NoiseError: Malformed or out of order.
        """
        return self._read(0, message)

    def write_message2(self, payload: bytes = b"") -> bytes:
        """Build msg2 (3424 + len(payload) bytes) and complete the handshake.

        Args:
            payload: Empty to accept; `REJECTION_SIGNAL` to report a registry 401.

        Raises:
            NoiseError: Out of order.
        """
        return self._write(1, payload)
