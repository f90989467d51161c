"""Certificates made by the test: a CA and a server certificate it signs, as PEM files.

ca = CertificateAuthority.make("test CA")
ca.write(tmp / "ca.pem")
ca.issue("127.0.0.1").write(tmp / "server.pem", tmp / "server.key")
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from execserver.local.network.certs import issue_server_certificate, make_authority

_LIFETIME = datetime.timedelta(days=1)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class ServerCertificate:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def write(self, cert_path: Path, key_path: Path) -> None:
        cert_path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_pem_key(self.key))
        key_path.chmod(0o600)


@dataclass(frozen=True)
class CertificateAuthority:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def make(cls, common_name: str) -> CertificateAuthority:
        key, certificate = make_authority(common_name, _LIFETIME)
        return cls(certificate, key)

    def write(self, path: Path) -> None:
        path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))

    def issue(self, host: str) -> ServerCertificate:
        """A server certificate for `host` (an IP address or a DNS name), signed by this CA."""
        key, certificate = issue_server_certificate(self.key, self.certificate, host, _LIFETIME)
        return ServerCertificate(certificate, key)


def server_context(directory: Path, hosts: list[str], *, ca_name: str = "ca.pem") -> ssl.SSLContext:
    """A TLS server context presenting a certificate per name in `hosts` (chosen by SNI; the
    first for a client that sends none, or an IP address's when it names one), all signed by a
    new CA written to `directory / ca_name` for the clients to trust."""
    authority = CertificateAuthority.make(f"test CA for {', '.join(hosts)}")
    authority.write(directory / ca_name)
    contexts: dict[str, ssl.SSLContext] = {}
    for host in hosts:
        authority.issue(host).write(directory / f"{host}.pem", directory / f"{host}.key")
        contexts[host] = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        contexts[host].load_cert_chain(directory / f"{host}.pem", directory / f"{host}.key")
    addresses = [h for h in hosts if _is_address(h)]

    def by_name(sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        chosen = contexts.get(name) if name else (contexts[addresses[0]] if addresses else None)
        if chosen is not None:
            sock.context = chosen

    context = contexts[hosts[0]]
    context.sni_callback = by_name  # type: ignore[assignment]
    return context


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
