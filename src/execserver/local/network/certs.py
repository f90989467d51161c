"""The credential broker's certificate authority: one per executor process, as codex 0.171 does.

The CA (EC P-256, `CN=network_proxy MITM CA`) is made on first use and its private key never
leaves memory. What a child needs to trust it is written under `$CODEX_HOME/proxy/`:
`ca-<sha256>.pem` (the CA certificate) and `ca-bundle-<sha256>.pem` (the system's roots followed
by the CA, so programs pointed at it still trust every public server), both `0600` in a `0700`
directory (files of other executors sharing the directory are left alone: one may still be
running). `ca_env()` names the bundle in
every variable the reference exports.

Leaf certificates for intercepted hosts are signed on demand and cached per host; their keys
are loaded into an `ssl.SSLContext` through an anonymous in-memory file (never on disk).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import os
import ssl
import threading
from collections import OrderedDict
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from execserver.private_file import write_private_file

CA_COMMON_NAME = "network_proxy MITM CA"
CA_BUNDLE_ENV_NAMES = (
    "SSL_CERT_FILE",
    "CURL_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "PIP_CERT",
    "DENO_CERT",
    "BUNDLE_SSL_CA_CERT",
    "CARGO_HTTP_CAINFO",
    "NPM_CONFIG_CAFILE",
    "npm_config_cafile",
    "CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE",
    "CODEX_CA_CERTIFICATE",
)
"""The variables a credential-masked child gets, all naming the bundle (codex 0.171's set)."""
MAX_CACHED_LEAVES = 64
LEAF_VALIDITY = datetime.timedelta(days=30)
CA_VALIDITY = datetime.timedelta(days=3650)
_SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)


class CertificateAuthorityError(Exception):
    """The CA files cannot be written (the message says where and why)."""


def _system_roots() -> bytes:
    """The PEM roots this machine trusts (empty if none are found)."""
    candidates = [ssl.get_default_verify_paths().cafile, *_SYSTEM_BUNDLES]
    for path in candidates:
        if path and os.path.isfile(path):
            with contextlib.suppress(OSError):
                data = Path(path).read_bytes()
                return data if data.endswith(b"\n") else data + b"\n"
    return b""


def make_authority(
    common_name: str, validity: datetime.timedelta
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new self-signed EC P-256 CA certificate (valid from a day ago) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def issue_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    host: str,
    validity: datetime.timedelta,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A server certificate for `host` (a DNS name or an IP address) signed by `ca`, and its
    new key."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, certificate


class CertificateAuthority:
    """The in-memory CA and its per-host leaf certificates (thread-safe)."""

    def __init__(self) -> None:
        self._key, self.certificate = make_authority(CA_COMMON_NAME, CA_VALIDITY)
        self.pem = self.certificate.public_bytes(serialization.Encoding.PEM)
        self._leaves: OrderedDict[str, ssl.SSLContext] = OrderedDict()
        self._lock = threading.Lock()
        self._bundles: dict[str, Path] = {}

    def bundle(self, codex_home: str) -> Path:
        """Write (once per `codex_home`) the CA and the bundle; the bundle's path.

        Raises `CertificateAuthorityError`."""
        with self._lock:
            known = self._bundles.get(codex_home)
            if known is not None and known.exists():
                return known
            directory = Path(codex_home) / "proxy"
            bundle = _system_roots() + self.pem
            try:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(directory, 0o700)
                ca_name = f"ca-{hashlib.sha256(self.pem).hexdigest()}.pem"
                bundle_name = f"ca-bundle-{hashlib.sha256(bundle).hexdigest()}.pem"
                write_private_file(str(directory / ca_name), self.pem)
                write_private_file(str(directory / bundle_name), bundle)
            except OSError as exc:
                raise CertificateAuthorityError(
                    f"cannot write the proxy CA under {directory}: {exc.strerror or exc}"
                ) from None
            self._bundles[codex_home] = directory / bundle_name
            return directory / bundle_name

    def server_context(self, host: str) -> ssl.SSLContext:
        """A TLS server context presenting a leaf certificate for `host`, signed by the CA."""
        with self._lock:
            context = self._leaves.get(host)
            if context is not None:
                self._leaves.move_to_end(host)
                return context
        context = self._make_leaf_context(host)
        with self._lock:
            self._leaves[host] = context
            while len(self._leaves) > MAX_CACHED_LEAVES:
                self._leaves.popitem(last=False)
        return context

    def _make_leaf_context(self, host: str) -> ssl.SSLContext:
        key, leaf = issue_server_certificate(self._key, self.certificate, host, LEAF_VALIDITY)
        chain = leaf.public_bytes(serialization.Encoding.PEM) + self.pem
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        fd = os.memfd_create("execserver-leaf", os.MFD_CLOEXEC)
        try:
            os.write(fd, chain + key_pem)
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return context


_authority: CertificateAuthority | None = None
_authority_lock = threading.Lock()


def authority() -> CertificateAuthority:
    """This executor's CA (made on first use)."""
    global _authority
    with _authority_lock:
        if _authority is None:
            _authority = CertificateAuthority()
        return _authority


def ca_env(bundle: Path) -> dict[str, str]:
    """The variables that point a child's TLS clients at `bundle`."""
    return dict.fromkeys(CA_BUNDLE_ENV_NAMES, str(bundle))
