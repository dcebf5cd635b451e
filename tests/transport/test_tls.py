"""LocalCA: files, permissions, reuse, renewal, and a chain a strict (Go-like) verifier accepts."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from nbtunnel.transport import tls
from nbtunnel.transport.tls import LocalCA


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_creates_files_with_private_keys_0600(tmp_path: Path) -> None:
    ca = LocalCA.load_or_create(tmp_path / "state")
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [
        "ca-key.pem",
        "ca.pem",
        "edge-key.pem",
        "edge.pem",
    ]
    for key in (ca.ca_key_path, ca.key_path):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert isinstance(load(ca.cert_path).public_key(), ec.EllipticCurvePublicKey)


def test_reuses_ca_and_leaf(tmp_path: Path) -> None:
    first = LocalCA.load_or_create(tmp_path)
    ca_pem, leaf_pem = first.ca_path.read_bytes(), first.cert_path.read_bytes()
    again = LocalCA.load_or_create(tmp_path)
    assert again.ca_path.read_bytes() == ca_pem
    assert again.cert_path.read_bytes() == leaf_pem


def test_reissues_missing_or_expired_leaf_with_same_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = LocalCA.load_or_create(tmp_path)
    ca_pem = ca.ca_path.read_bytes()
    ca.cert_path.unlink()
    LocalCA.load_or_create(tmp_path)
    assert ca.cert_path.exists() and ca.ca_path.read_bytes() == ca_pem

    monkeypatch.setattr(tls, "LEAF_LIFETIME", dt.timedelta(days=1))  # inside the renew margin
    LocalCA.load_or_create(tmp_path)  # current leaf is fine: kept
    ca.cert_path.unlink()
    LocalCA.load_or_create(tmp_path)  # issues a short-lived one
    short = ca.cert_path.read_bytes()
    monkeypatch.undo()
    LocalCA.load_or_create(tmp_path)  # expiring soon: replaced
    assert ca.cert_path.read_bytes() != short
    assert ca.ca_path.read_bytes() == ca_pem


def test_chain_passes_strict_webpki_verification(tmp_path: Path) -> None:
    ca = LocalCA.load_or_create(tmp_path)
    root, leaf = load(ca.ca_path), load(ca.cert_path)
    store = Store([root])
    for name in ("quic.cftunnel.com", "h2.cftunnel.com", "probe.cftunnel.com", "localhost"):
        verifier = PolicyBuilder().store(store).build_server_verifier(x509.DNSName(name))
        chain = verifier.verify(leaf, [])
        assert chain[-1] == root
    verifier = (
        PolicyBuilder()
        .store(store)
        .build_server_verifier(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    )
    verifier.verify(leaf, [])


def test_extensions_go_needs(tmp_path: Path) -> None:
    ca = LocalCA.load_or_create(tmp_path)
    root, leaf = load(ca.ca_path), load(ca.cert_path)
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert root.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    root_ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == root_ski.digest
    assert leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
