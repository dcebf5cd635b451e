"""HTTPS front certificates: files chosen by SNI (wildcards), a failed reload keeps the old
ones, SIGHUP to the real `nbtunnel edge` swaps them with a connection open, and the optional
redirect from the plain front."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import ssl
import sys
from pathlib import Path

import aiohttp
import pytest

from nbtunnel.edge.certs import CertificateError, covers
from nbtunnel.edge.server import Edge, EdgeConfig
from nbtunnel.transport.tls import LocalCA
from tests.access.conftest import StartTunnel
from tests.access.test_https_front import peer_certificate

ENTRY = Path(sys.executable).with_name("nbtunnel")


def _write_pair(ca: LocalCA, names: list[str], cert: Path, key: Path) -> int:
    cert_pem, key_pem = ca.issue(names)
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    from cryptography import x509

    return x509.load_pem_x509_certificate(cert_pem).serial_number


def test_wildcards_cover_one_label() -> None:
    assert covers("*.example.test", "a.example.test")
    assert not covers("*.example.test", "a.b.example.test")
    assert not covers("*.example.test", "example.test")
    assert covers("example.test", "example.test")


async def test_sni_picks_the_file_and_a_bad_reload_keeps_the_old(tmp_path: Path) -> None:
    ca = LocalCA.load_or_create(tmp_path / "ca")
    c1, k1, c2, k2 = (tmp_path / n for n in ("w.pem", "w.key", "o.pem", "o.key"))
    wild = _write_pair(ca, ["*.example.test"], c1, k1)
    other = _write_pair(ca, ["other.test"], c2, k2)
    cafile = str(ca.ca_path)
    async with Edge(EdgeConfig(state_dir=tmp_path / "edge", quic_port=0, http_port=0,
                               https_port=0, https_certs=[(c1, k1), (c2, k2)])) as edge:
        address = edge.https_address
        assert address is not None
        assert (await peer_certificate(address, "a.example.test", cafile)).serial_number == wild
        assert (await peer_certificate(address, "other.test", cafile)).serial_number == other
        # an unknown name gets the first certificate (and fails verification, as it should)
        assert (await peer_certificate(address, "nope.test")).serial_number == wild
        c1.write_text("not a certificate")
        with pytest.raises(CertificateError, match=str(c1)):
            edge.reload_certificates()
        assert (await peer_certificate(address, "a.example.test", cafile)).serial_number == wild


async def test_sighup_reloads_with_a_connection_open(tmp_path: Path) -> None:
    if not ENTRY.exists():
        pytest.skip("the nbtunnel entry point is not installed in this venv")
    ca = LocalCA.load_or_create(tmp_path / "ca")
    cert, key = tmp_path / "site.pem", tmp_path / "site.key"
    first = _write_pair(ca, ["*.example.test"], cert, key)
    proc = await asyncio.create_subprocess_exec(
        str(ENTRY), "edge", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
        "--https", "127.0.0.1:0", "--https-cert", str(cert), "--https-key", str(key),
        "--state-dir", str(tmp_path / "state"), stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "NBTUNNEL_HOME": str(tmp_path / "home")})
    assert proc.stdout is not None
    try:
        port = 0
        while not port:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, "the edge exited"
            if m := re.search(rb"https front:\s+https://127\.0\.0\.1:(\d+)", line):
                port = int(m.group(1))
        ctx = ssl.create_default_context(cafile=str(ca.ca_path))
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                       server_hostname="a.example.test")
        request = b"GET / HTTP/1.1\r\nHost: a.example.test\r\nUser-Agent: curl/8\r\n\r\n"

        async def ask() -> bytes:
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            return head

        assert (await ask()).startswith(b"HTTP/1.1 404")
        second = _write_pair(ca, ["*.example.test"], cert, key)
        proc.send_signal(signal.SIGHUP)
        while b"reloaded" not in await asyncio.wait_for(proc.stdout.readline(), 10):
            pass
        fresh = await peer_certificate(("127.0.0.1", port), "b.example.test", str(ca.ca_path))
        assert fresh.serial_number == second != first
        assert (await ask()).startswith(b"HTTP/1.1 404")  # the old connection still serves
        writer.close()
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)


async def test_http_redirects_to_https(tmp_path: Path, start: StartTunnel) -> None:
    t = await start("http_status:204")
    async with Edge(EdgeConfig(state_dir=tmp_path / "redirecting", quic_port=0, http_port=0,
                               https_port=0, https_redirect=True)) as edge:
        # the tunnel lives on the fixture's edge; this edge only knows the API host names
        host, port = edge.public_address
        https_port = edge.https_address[1]  # type: ignore[index]
        async with aiohttp.ClientSession() as client:
            async with client.get(f"http://{host}:{port}/x?y=1", allow_redirects=False,
                                  headers={"Host": t.hostname}) as resp:
                assert resp.status == 404  # not a hostname this edge serves: no redirect
    edge = t.edge
    assert edge.https is not None
    edge.https.enable_redirect()
    try:
        host, port = edge.public_address
        https_port = edge.https_address[1]  # type: ignore[index]
        async with aiohttp.ClientSession() as client:
            async with client.post(f"http://{host}:{port}/x?y=1", allow_redirects=False,
                                   headers={"Host": t.hostname}) as resp:
                assert resp.status == 308
                assert resp.headers["Location"] == f"https://{t.hostname}:{https_port}/x?y=1"
            async with client.get(f"http://{host}:{port}/api", allow_redirects=False) as resp:
                assert resp.status != 308  # API names are never redirected
    finally:
        edge.front.https_redirect = None  # type: ignore[union-attr]
