"""A throwaway PKI for TLS tests, written in QEMU's x509 directory layout.

``write_pki(dir)`` makes a CA, a server certificate (IP SAN 127.0.0.1 and dNSName localhost,
unless told otherwise), a client certificate, and a second, unrelated CA, as
``ca-cert.pem``, ``server-cert.pem``, ``server-key.pem``, ``client-cert.pem``,
``client-key.pem`` and ``other-ca-cert.pem``. QEMU (``tls-creds-x509,dir=``) and spice-server
(``x509-dir=``) read the first three and ignore the rest.

QEMU checks its own certificates before it starts: the CA needs ``CA:TRUE`` and keyCertSign,
the server certificate ``CA:FALSE``, digitalSignature plus keyEncipherment and serverAuth.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca-cert.pem"

    @property
    def server_cert(self) -> Path:
        return self.dir / "server-cert.pem"

    @property
    def server_key(self) -> Path:
        return self.dir / "server-key.pem"

    @property
    def client_cert(self) -> Path:
        return self.dir / "client-cert.pem"

    @property
    def client_key(self) -> Path:
        return self.dir / "client-key.pem"

    @property
    def other_ca_cert(self) -> Path:
        """A CA that signed nothing here: trusting it instead of ca_cert must fail."""
        return self.dir / "other-ca-cert.pem"


def _key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "console-proxy tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(subject: str, issuer: x509.Name, key: Key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
    )


def _usage(*, sign: bool = False, cert_sign: bool = False, encipher: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=encipher,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(common_name: str) -> tuple[x509.Certificate, Key]:
    key = _key()
    cert = (
        _builder(common_name, _name(common_name), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(sign=True, cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_leaf(
    common_name: str,
    ca: tuple[x509.Certificate, Key],
    usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, Key]:
    ca_cert, ca_key = ca
    key = _key()
    builder = (
        _builder(common_name, ca_cert.subject, key)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(sign=True, encipher=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _write_key(path: Path, key: Key) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def write_pki(directory: Path, *, server_ip_san: bool = True) -> Pki:
    """Write the PKI into ``directory`` (created if needed). ``server_ip_san=False`` leaves the
    server certificate with only dNSName localhost, so checking it against 127.0.0.1 fails."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca("console-proxy test CA")
    sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
    if server_ip_san:
        sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    server = make_leaf("hypervisor", ca, ExtendedKeyUsageOID.SERVER_AUTH, sans)
    client = make_leaf("console-proxy", ca, ExtendedKeyUsageOID.CLIENT_AUTH)
    other_ca, _ = make_ca("unrelated test CA")
    pki = Pki(directory)
    _write_cert(pki.ca_cert, ca[0])
    _write_cert(pki.server_cert, server[0])
    _write_key(pki.server_key, server[1])
    _write_cert(pki.client_cert, client[0])
    _write_key(pki.client_key, client[1])
    _write_cert(pki.other_ca_cert, other_ca)
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """One :func:`write_pki` per test module (registered in tests/conftest.py)."""
    return write_pki(tmp_path_factory.mktemp("pki"))
