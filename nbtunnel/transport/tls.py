"""A small local certificate authority for a private edge.

cloudflared verifies the edge like any WebPKI server (``--cacert`` replaces the root pool), so
the edge needs a CA certificate to hand out and a server certificate whose SANs cover the names
cloudflared dials: ``quic.cftunnel.com`` (QUIC), ``h2.cftunnel.com`` (HTTP/2) and
``probe.cftunnel.com`` (pre-checks). Go's verifier is strict about the chain, so the root carries
basicConstraints CA + keyCertSign and both certificates carry SKI/AKI; the leaf has serverAuth.
The CA is created once and kept; the leaf is re-issued when it is missing, expired or broken.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

EDGE_DNS_NAMES = ("quic.cftunnel.com", "h2.cftunnel.com", "probe.cftunnel.com", "localhost")
EDGE_IP_ADDRESSES = ("127.0.0.1",)
CA_LIFETIME = dt.timedelta(days=3650)
LEAF_LIFETIME = dt.timedelta(days=825)
# Re-issue the leaf a little before it expires so a long-running edge never serves a dead cert.
LEAF_RENEW_MARGIN = dt.timedelta(days=7)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    """Write a key file that is never readable by others, even for an instant."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class LocalCA:
    """Paths of a CA (``ca.pem``) and an edge certificate it signed (``edge.pem``)."""

    state_dir: Path

    @property
    def ca_path(self) -> Path:
        return self.state_dir / "ca.pem"

    @property
    def ca_key_path(self) -> Path:
        return self.state_dir / "ca-key.pem"

    @property
    def cert_path(self) -> Path:
        return self.state_dir / "edge.pem"

    @property
    def key_path(self) -> Path:
        return self.state_dir / "edge-key.pem"

    @classmethod
    def load_or_create(cls, state_dir: Path) -> LocalCA:
        """Reuse the CA in ``state_dir`` (creating it once) and ensure a valid edge cert."""
        state_dir = Path(state_dir)
        state_dir.mkdir(parents=True, exist_ok=True)
        ca = cls(state_dir)
        if not (ca.ca_path.exists() and ca.ca_key_path.exists()):
            ca._create_ca()
        if not ca._leaf_is_usable():
            ca._issue_leaf()
        return ca

    def _create_ca(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nbtunnel"),
                x509.NameAttribute(NameOID.COMMON_NAME, "nbtunnel local edge CA"),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + CA_LIFETIME)
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
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        _write_private(self.ca_key_path, _key_pem(key))
        _write_public(self.ca_path, cert.public_bytes(serialization.Encoding.PEM))

    def _load_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        cert = x509.load_pem_x509_certificate(self.ca_path.read_bytes())
        key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.ca_key_path} is not an EC private key")
        return cert, key

    def _leaf_is_usable(self) -> bool:
        """True when edge.pem/edge-key.pem exist, match, are signed by this CA and not expiring."""
        if not (self.cert_path.exists() and self.key_path.exists()):
            return False
        try:
            leaf = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
            key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
            ca_cert, _ = self._load_ca()
            leaf.verify_directly_issued_by(ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        if leaf.public_key() != key.public_key():
            return False
        now = _now()
        return leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc - LEAF_RENEW_MARGIN

    def _issue_leaf(self) -> None:
        names = [*EDGE_DNS_NAMES, *EDGE_IP_ADDRESSES]
        cert_pem, key_pem = self.issue(names, lifetime=LEAF_LIFETIME)
        _write_private(self.key_path, key_pem)
        _write_public(self.cert_path, cert_pem)

    def issue(self, names: Sequence[str], *, lifetime: dt.timedelta = LEAF_LIFETIME
              ) -> tuple[bytes, bytes]:
        """A server certificate for `names` (DNS names, `*.` wildcards or IP addresses)
        signed by this CA: (certificate PEM, private key PEM). The HTTPS front issues one per
        hostname it serves when no certificate files are given."""
        ca_cert, ca_key = self._load_ca()
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        now = _now()
        ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(min(now + lifetime, ca_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)
