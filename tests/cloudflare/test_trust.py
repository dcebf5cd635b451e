"""The bundled Cloudflare Origin CA roots: golden fingerprints, clean PEM, and really used."""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from nbtunnel.edge.server import Edge, EdgeConfig
from nbtunnel.transport.errors import HandshakeError
from nbtunnel.transport.http2 import dial as dial_http2
from nbtunnel.transport.quic import QuicSettings, connect
from nbtunnel.transport.trust import Trust, cloudflare_roots_pem
from tests.cloudflare.cfcloud import start_edge
from tests.cloudflare.cfstubs import TestPKI

# tlsconfig/cloudflare_ca.go at cloudflared d1df7985 (release 2026.8.2)
GOLDEN = {
    "aa63697a22764b67b2134ce14cb5690ea336940b93986113f49545917832d80d":
        "CloudFlare Origin SSL ECC Certificate Authority",
    "d3c7e85c91707fc0a12abc5d88266747aa4fa8e7b162f633ffb3c9d989947620":
        "CloudFlare Origin SSL Certificate Authority",
    "9a1ac2b4be15f9f27eee20a734cba4e9898f61001b3bd7c84b69b56a3e25a2b9":
        "origin-pull.cloudflare.net",
}


def test_bundled_roots_are_the_three_golden_certificates() -> None:
    certs = x509.load_pem_x509_certificates(cloudflare_roots_pem())
    fingerprints = {c.fingerprint(hashes.SHA256()).hex(): c for c in certs}
    assert set(fingerprints) == set(GOLDEN)
    for fp, cert in fingerprints.items():
        assert GOLDEN[fp] in cert.subject.rfc4514_string()
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_bundle_is_clean_pem_that_every_loader_reads_whole() -> None:
    pem = cloudflare_roots_pem()
    text = pem.decode("ascii")
    assert text.startswith("-----BEGIN CERTIFICATE-----")
    assert text.endswith("-----END CERTIFICATE-----\n")
    assert text.count("BEGIN CERTIFICATE") == 3
    from qh3.tls import load_store_and_sort

    anchors, intermediates, _ = load_store_and_sort(cadata=pem)
    assert len(anchors) == 3 and not intermediates
    ctx = ssl.create_default_context(cadata=text)
    assert len(ctx.get_ca_certs()) == 3
    # the NOTICE beside it names the source and license
    notice = (Path(__file__).parents[2] / "nbtunnel/transport/certs/NOTICE").read_text()
    assert "tlsconfig/cloudflare_ca.go" in notice and "Apache License" in notice


def test_bundle_is_refreshed_a_year_before_it_expires() -> None:
    certs = x509.load_pem_x509_certificates(cloudflare_roots_pem())
    first_expiry = min(c.not_valid_after_utc for c in certs)
    assert first_expiry - dt.datetime.now(dt.UTC) > dt.timedelta(days=365), (
        "Cloudflare's origin roots expire within a year: refresh "
        "nbtunnel/transport/certs/cloudflare-origin-roots.pem from cloudflared")
    assert hashlib.sha256(cloudflare_roots_pem()).hexdigest()  # read as package data


def test_cacert_replaces_the_pool_as_in_cloudflared(tmp_path: Path) -> None:
    only = Trust.cloudflare_edge(str(tmp_path / "ca.pem"))
    assert only.cafile == str(tmp_path / "ca.pem") and only.cadata is None
    default = Trust.cloudflare_edge()
    assert default.cafile is None and default.cadata is not None
    assert default.cadata.startswith(cloudflare_roots_pem())
    assert "Cloudflare's origin CA roots" in default.description


@pytest.fixture
async def test_edge(tmp_path: Path, pki: TestPKI) -> Edge:
    edge = await start_edge(EdgeConfig(state_dir=pki.dir, quic_port=0, http_port=0))
    yield edge  # type: ignore[misc]
    await edge.close()


@pytest.mark.parametrize("backend", ["qh3", "aioquic"])
async def test_bundle_alone_fails_against_the_test_edge_over_quic(test_edge: Edge,
                                                                  pki: TestPKI,
                                                                  backend: str) -> None:
    """Negative: production trust does not accept a certificate from another root, so the
    bundle is really what verifies (verification is not off)."""
    trust = Trust.cloudflare_edge()
    with pytest.raises(HandshakeError) as info:
        await connect(*test_edge.quic_address, cafile=trust.cafile, cadata=trust.cadata,
                      settings=QuicSettings(backend=backend))
    assert "issuer" in str(info.value).lower() or "certificate" in str(info.value).lower()
    # the test root given as --cacert is what makes the same handshake work
    override = Trust.cloudflare_edge(str(pki.ca_path))
    conn = await connect(*test_edge.quic_address, cafile=override.cafile,
                         cadata=override.cadata, settings=QuicSettings(backend=backend))
    assert conn.alpn == "argotunnel"
    conn.close(0, "")


async def test_bundle_alone_fails_against_the_test_edge_over_http2(test_edge: Edge,
                                                                   pki: TestPKI) -> None:
    trust = Trust.cloudflare_edge()
    with pytest.raises(HandshakeError, match="CERTIFICATE_VERIFY_FAILED"):
        await dial_http2(*test_edge.quic_address, trust.cafile, cadata=trust.cadata)
    conn = await dial_http2(*test_edge.quic_address, str(pki.ca_path))
    conn.close(0, "")
