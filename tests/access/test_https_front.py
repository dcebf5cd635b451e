"""The HTTPS public front: TLS with certificates from the local CA (issued per hostname),
HTTP/1.1 and HTTP/2 (real curl), WebSocket over HTTP/1.1, the access client over TLS, and the
101-without-upgrade page."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from nbtunnel.access import AccessError, connect
from nbtunnel.edge.server import Edge
from tests.access.conftest import EchoServer, StartTunnel
from tests.e2e.conftest import Origin, download_sha256

CURL = shutil.which("curl")
MB = 1024 * 1024


def _https(edge: Edge) -> tuple[str, int]:
    address = edge.https_address
    assert address is not None
    return address


async def curl(*args: str) -> tuple[int, bytes, bytes]:
    assert CURL is not None
    proc = await asyncio.create_subprocess_exec(
        CURL, "-sS", "--max-time", "60", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode or 0, out, err


def _resolve(edge: Edge, hostname: str) -> list[str]:
    port = _https(edge)[1]
    return ["--cacert", str(edge.ca_path), "--resolve", f"{hostname}:{port}:127.0.0.1"]


async def peer_certificate(address: tuple[str, int], server_name: str,
                           cafile: str | None = None) -> x509.Certificate:
    ctx = ssl.create_default_context(cafile=cafile)
    if cafile is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.open_connection(*address, ssl=ctx, server_hostname=server_name)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return x509.load_der_x509_certificate(der)


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
async def test_curl_http2_routing_headers_and_download(start: StartTunnel,
                                                       origin: Origin) -> None:
    t = await start(origin.url)
    edge, host = t.edge, t.hostname
    url = t.edge.https_url(host)
    assert url is not None
    code, out, err = await curl("--http2", "-D", "-", *_resolve(edge, host), f"{url}/echo/x?q=1")
    assert code == 0, err
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/2 200")
    doc = json.loads(body)
    got = {k.lower(): v for k, v in doc["headers"]}
    assert got["x-forwarded-proto"] == "https"
    assert got["cf-visitor"] == '{"scheme":"https"}'
    assert doc["path"] == "/echo/x" and doc["query"] == "q=1"
    # the certificate was issued for this very hostname by the edge's CA
    cert = await peer_certificate(_https(edge), host, str(edge.ca_path))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [host]
    size = 8 * MB
    code, out, err = await curl("--http2", *_resolve(edge, host), f"{url}/download/{size}")
    assert code == 0, err
    assert hashlib.sha256(out).hexdigest() == download_sha256(size)


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
async def test_curl_http2_upload_and_error_pages(start: StartTunnel, origin: Origin,
                                                 tmp_path: Path) -> None:
    t = await start(origin.url)
    edge, host = t.edge, t.hostname
    data = bytes(range(256)) * 8192  # 2 MiB
    (tmp_path / "up.bin").write_bytes(data)
    code, out, err = await curl("--http2", *_resolve(edge, host), "--data-binary",
                                f"@{tmp_path / 'up.bin'}", f"{edge.https_url(host)}/upload")
    assert code == 0, err
    assert json.loads(out) == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    unknown = "nobody.localhost"
    code, out, err = await curl("--http2", "-D", "-", *_resolve(edge, unknown),
                                f"{edge.https_url(unknown)}/")
    assert code == 0, err
    assert out.startswith(b"HTTP/2 404") and b"No tunnel serves the hostname" in out


async def test_https_http1_and_websocket(start: StartTunnel, origin: Origin) -> None:
    t = await start(origin.url)
    ctx = ssl.create_default_context(cafile=str(t.edge.ca_path))
    host, port = _https(t.edge)
    base = f"https://{host}:{port}"
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{base}/echo", headers={"Host": t.hostname}, ssl=ctx) as resp:
            assert resp.status == 200
            doc = await resp.json()
        assert {k.lower(): v for k, v in doc["headers"]}["x-forwarded-proto"] == "https"
        async with client.ws_connect(f"{base}/ws", headers={"Host": t.hostname},
                                     ssl=ctx) as ws:
            await ws.send_str("over tls")
            assert await ws.receive_str(timeout=10) == "over tls"


@pytest.mark.parametrize("protocol", ["quic", "http2"])
async def test_access_client_over_tls(start: StartTunnel, echo: EchoServer,
                                      protocol: str) -> None:
    t = await start(f"tcp://{echo.address}", protocol)
    https_host, https_port = _https(t.edge)
    edge_address = f"{https_host}:{https_port}"
    with pytest.raises(AccessError, match="not trusted"):
        await connect(t.hostname, edge_address=edge_address)
    reader, writer = await connect(t.hostname, edge_address=edge_address,
                                   edge_ca=str(t.edge.ca_path))
    writer.write(b"ping over wss")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 10) == b"ping over wss" + echo.tail
    writer.close()
    reader, writer = await connect(t.hostname, edge_address=edge_address, insecure=True)
    writer.close()


@pytest.mark.parametrize("protocol", ["quic", "http2"])
async def test_plain_get_to_a_tcp_service_is_a_clear_502(start: StartTunnel, echo: EchoServer,
                                                         protocol: str) -> None:
    t = await start(f"tcp://{echo.address}", protocol)
    host, port = t.edge.public_address
    async with aiohttp.ClientSession() as client:
        async with client.get(f"http://{host}:{port}/", headers={"Host": t.hostname},
                              timeout=aiohttp.ClientTimeout(total=20)) as resp:
            assert resp.status == 502
            text = await resp.text()
    assert "TCP service" in text and f"access tcp --hostname {t.hostname}" in text
    if CURL is not None:
        code, out, err = await curl("--http2", "-D", "-", *_resolve(t.edge, t.hostname),
                                    f"{t.edge.https_url(t.hostname)}/")
        assert code == 0, err
        assert out.startswith(b"HTTP/2 502") and b"TCP service" in out
