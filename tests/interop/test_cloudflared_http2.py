"""Interop with the real cloudflared over its HTTP/2 transport (`--protocol http2`).

Skipped unless NBTUNNEL_CLOUDFLARED names the binary. The edge is the HTTP/2 client here: it
opens the control-stream request and one request per eyeball request (see transport/http2/edge.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import socket
import time
from pathlib import Path

import aiohttp
import pytest

from nbtunnel.edge.config_push import push_configuration
from nbtunnel.edge.server import Edge
from tests.e2e.conftest import Origin, download_sha256, eventually
from tests.interop.test_cloudflared import (
    CLOUDFLARED,
    _concurrent_requests,
    _read_until,
    quick_cloudflared,
)

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not CLOUDFLARED, reason="set NBTUNNEL_CLOUDFLARED to a cloudflared binary"),
]

HTTP2 = ("--protocol", "http2", "--grace-period", "30s")


async def test_http2_registers_and_proxies(
    edge: Edge, origin: Origin, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with quick_cloudflared(edge, origin.url, tmp_path, HTTP2) as cf:
        assert any("protocol=http2" in line for line in cf.log), "".join(cf.log)
        conns = edge.registry.connections()
        assert len(conns) == 1 and conns[0].protocol == "http2"
        base = "http://{}:{}".format(*edge.public_address)
        headers = {"Host": cf.hostname, "X-Test": "yes", "User-Agent": "h2-interop"}

        async with client.get(f"{base}/echo/a?x=1&y=two", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["X-Origin"] == "test"
            doc = await resp.json()
        assert doc["method"] == "GET" and doc["path"] == "/echo/a" and doc["query"] == "x=1&y=two"
        sent = {k.lower(): v for k, v in doc["headers"]}
        assert sent["x-test"] == "yes" and sent["user-agent"] == "h2-interop"
        assert sent["host"] == cf.hostname and sent["cf-connecting-ip"] == "127.0.0.1"

        async with client.post(f"{base}/echo/post", data=b"hello=world",
                               headers=headers) as resp:
            assert resp.status == 200
            doc = await resp.json()
        assert doc["method"] == "POST" and doc["body"] == "hello=world"

        upload = os.urandom(3 << 20)
        async with client.post(f"{base}/upload", data=upload, headers=headers) as resp:
            assert (await resp.json())["sha256"] == hashlib.sha256(upload).hexdigest()

        size = 16 << 20
        h = hashlib.sha256()
        async with client.get(f"{base}/download/{size}", headers=headers) as resp:
            assert resp.status == 200 and resp.content_length == size
            async for chunk in resp.content.iter_any():
                h.update(chunk)
        assert h.hexdigest() == download_sha256(size)

        async with client.ws_connect(f"{base}/ws", headers={"Host": cf.hostname}) as ws:
            for i in range(3):
                await ws.send_str(f"hello {i}")
                assert (await ws.receive(timeout=5)).data == f"hello {i}"
            blob = os.urandom(256 << 10)
            await ws.send_bytes(blob)
            assert (await ws.receive(timeout=5)).data == blob

        resp = await client.get(f"{base}/download/{1 << 30}", headers=headers)
        assert resp.status == 200
        await resp.content.readexactly(1 << 20)
        assert await _concurrent_requests(client, cf.metrics) == 1
        resp.close()  # the client leaves mid-body: RST_STREAM must stop cloudflared too
        async with asyncio.timeout(10):
            while await _concurrent_requests(client, cf.metrics):  # noqa: ASYNC110 - polling
                await asyncio.sleep(0.1)

        config = json.dumps({"ingress": [{"service": "http_status:418"}]}).encode()
        result = await push_configuration(edge.registry.connections()[0], 1, config)
        assert result.applied_version == 1 and not result.error, result
        async with client.get(f"{base}/echo/after", headers=headers) as resp:
            assert resp.status == 418


async def test_http2_origin_down_is_a_502(
    edge: Edge, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    async with quick_cloudflared(edge, f"http://127.0.0.1:{dead}", tmp_path, HTTP2) as cf:
        base = "http://{}:{}".format(*edge.public_address)
        async with client.get(f"{base}/x", headers={"Host": cf.hostname}) as resp:
            assert resp.status == 502
            assert "connector could not serve" in await resp.text()
        assert len(edge.registry.connections()) == 1  # the connection survives


async def test_http2_sigterm_drains(
    edge: Edge, origin: Origin, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """SIGTERM: unregister, the in-flight response finishes, then the edge closes the TCP
    connection and cloudflared exits well inside its grace period."""
    async with quick_cloudflared(edge, origin.url, tmp_path, HTTP2) as cf:
        base = "http://{}:{}".format(*edge.public_address)
        headers = {"Host": cf.hostname}
        async with client.get(f"{base}/sse", headers=headers) as sse:
            assert sse.status == 200
            assert await sse.content.readuntil(b"\n\n") == b"data: first\n\n"
            started = time.monotonic()
            cf.proc.send_signal(signal.SIGTERM)
            await _read_until(cf.proc, cf.log, "Unregistered tunnel connection", timeout=10)
            await eventually(lambda: edge.registry.connections()[0].draining)
            async with client.get(f"{base}/echo/late", headers=headers) as resp:
                assert resp.status == 530
            origin.sse_release.set()
            assert await sse.content.read() == b"data: second\n\n"
        assert cf.proc.stdout is not None
        async with asyncio.timeout(15):
            while line := await cf.proc.stdout.readline():
                cf.log.append(line.decode(errors="replace"))
            assert await cf.proc.wait() == 0, "".join(cf.log)
        assert time.monotonic() - started < 15
        await eventually(lambda: not edge.registry.connections())


async def test_http2_registration_error_is_logged_and_closed(
    edge: Edge, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Over HTTP/2 cloudflared logs the edge's cause; the edge then closes the connection."""
    assert CLOUDFLARED is not None
    async with client.post(edge.api_url + "/tunnel") as resp:
        result = (await resp.json())["result"]
    token = base64.b64encode(json.dumps({"a": result["account_tag"], "t": result["id"],
                                         "s": base64.b64encode(b"x" * 32).decode()}).encode())
    host, port = edge.quic_address
    proc = await asyncio.create_subprocess_exec(
        CLOUDFLARED, "tunnel", "--no-autoupdate", "--no-prechecks", "--edge", f"{host}:{port}",
        "--protocol", "http2", "--cacert", str(edge.ca_path), "--metrics", "127.0.0.1:0",
        "run", "--token", token.decode(), "--url", "http://127.0.0.1:9",
        env={**os.environ, "HOME": str(tmp_path)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    log: list[str] = []
    try:
        await _read_until(proc, log, "Register tunnel error from server side", timeout=20)
        line = next(x for x in log if "Register tunnel error from server side" in x)
        assert "Unauthorized: Invalid tunnel secret" in line, line
        await _read_until(proc, log, "Retrying connection", timeout=10)  # edge closed it
        assert not edge.registry.connections()
    finally:
        proc.kill()
        await proc.wait()
