"""Interop with the real cloudflared binary; skipped unless NBTUNNEL_CLOUDFLARED names it.

The hidden flags (--edge, --cacert, --quick-service) are tunnel-level: they go before --url.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from nbtunnel.edge.server import Edge, EdgeConfig
from nbtunnel.transport.quic import available_backends
from tests.e2e.conftest import Origin, download_sha256, eventually, held_requests

CLOUDFLARED = os.environ.get("NBTUNNEL_CLOUDFLARED")
pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not CLOUDFLARED, reason="set NBTUNNEL_CLOUDFLARED to a cloudflared binary"),
]


@dataclass
class QuickCloudflared:
    proc: asyncio.subprocess.Process
    hostname: str
    metrics: str  # http://127.0.0.1:PORT
    log: list[str]


@contextlib.asynccontextmanager
async def quick_cloudflared(
    edge: Edge, origin_url: str, home: Path, extra: tuple[str, ...] = ()
) -> AsyncIterator[QuickCloudflared]:
    """`cloudflared tunnel [EXTRA] --url ORIGIN` against our edge, until it registered."""
    assert CLOUDFLARED is not None
    host, port = edge.quic_address
    proc = await asyncio.create_subprocess_exec(
        CLOUDFLARED, "tunnel", "--no-autoupdate", "--no-prechecks",
        "--edge", f"{host}:{port}", "--cacert", str(edge.ca_path),
        "--quick-service", edge.api_url, "--metrics", "127.0.0.1:0", *extra,
        "--url", origin_url,
        env={**os.environ, "HOME": str(home)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    log: list[str] = []
    try:
        await _read_until(proc, log, "Registered tunnel connection")
        text = "".join(log)
        banner = re.search(r"\|\s+https://([a-z0-9.-]+)\s+\|", text)  # the banner box
        metrics = re.search(r"Starting metrics server on (127\.0\.0\.1:\d+)/metrics", text)
        assert banner and metrics, text
        yield QuickCloudflared(proc, banner.group(1), f"http://{metrics.group(1)}", log)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _binary_version() -> str:
    assert CLOUDFLARED is not None
    proc = await asyncio.create_subprocess_exec(CLOUDFLARED, "--version",
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    found = re.search(r"version (\S+)", out.decode())
    assert found, out
    return found.group(1)


async def test_real_cloudflared_quick_tunnel_through_our_edge(
    edge: Edge, origin: Origin, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with quick_cloudflared(edge, origin.url, tmp_path) as cf:
        hp = edge.public_address
        for i in range(20):
            async with client.post(f"http://{hp[0]}:{hp[1]}/echo/{i}?q={i}", data=b"body",
                                   headers={"Host": cf.hostname}) as resp:
                assert resp.status == 200, await resp.text()
                doc = await resp.json()
                assert doc["method"] == "POST" and doc["body"] == "body"
                assert doc["query"] == f"q={i}"
        conns = edge.registry.connections()
        assert len(conns) == 1
        # what the binary says it is: "2024.8.2" for a release, "DEV" for a source build
        assert conns[0].client_version == await _binary_version()


@pytest.mark.skipif("aioquic" not in available_backends(), reason="aioquic is not installed")
async def test_real_cloudflared_through_an_aioquic_edge(
    origin: Origin, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The aioquic backend answers cloudflared's X25519MLKEM768-only key share (our patch)."""
    config = EdgeConfig(state_dir=tmp_path / "edge", quic_port=0, http_port=0,
                        quic_backend="aioquic")
    async with Edge(config) as edge, quick_cloudflared(edge, origin.url, tmp_path) as cf:
        hp = edge.public_address
        async with client.get(f"http://{hp[0]}:{hp[1]}/echo/aioquic",
                              headers={"Host": cf.hostname}) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["path"] == "/echo/aioquic"
        assert edge.registry.connections()[0].transport.backend == "aioquic"


async def _concurrent_requests(client: aiohttp.ClientSession, metrics: str) -> int:
    async with client.get(f"{metrics}/metrics", headers={"Accept-Encoding": "identity"}) as resp:
        text = await resp.text()
    m = re.search(r"^cloudflared_tunnel_concurrent_requests_per_tunnel (\d+)", text, re.M)
    assert m, text
    return int(m.group(1))


async def test_real_cloudflared_streams_websocket_and_abandoned_download(
    edge: Edge, origin: Origin, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Byte-exact download, websocket echo, and a client that leaves mid-download.

    When the client goes away the edge must stop the stream both ways: cloudflared has no
    write timeout, so a response nobody reads would keep its request (and the origin
    request) open until the connection ends.
    """
    async with quick_cloudflared(edge, origin.url, tmp_path) as cf:
        base = "http://{}:{}".format(*edge.public_address)
        headers = {"Host": cf.hostname}
        size = 16 << 20
        h = hashlib.sha256()
        async with client.get(f"{base}/download/{size}", headers=headers) as resp:
            assert resp.status == 200 and resp.content_length == size
            async for chunk in resp.content.iter_any():
                h.update(chunk)
        assert h.hexdigest() == download_sha256(size)

        async with client.ws_connect(f"{base}/ws", headers=headers) as ws:
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
        resp.close()  # drop the client connection mid-body
        async with asyncio.timeout(10):
            while await _concurrent_requests(client, cf.metrics):  # noqa: ASYNC110 - polling
                await asyncio.sleep(0.1)


async def _read_until(proc: asyncio.subprocess.Process, log: list[str], pattern: str,
                      count: int = 1, timeout: float = 30) -> None:
    """Collect cloudflared's output until `pattern` was seen `count` times."""
    assert proc.stdout is not None
    seen = sum(pattern in line for line in log)
    async with asyncio.timeout(timeout):
        while seen < count:
            line = (await proc.stdout.readline()).decode(errors="replace")
            assert line, "cloudflared exited:\n" + "".join(log)
            log.append(line)
            seen += pattern in line


async def test_real_cloudflared_ha_connections_and_graceful_drain(
    edge: Edge, origin: Origin, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """4 HA connections to one address; SIGTERM lets an in-flight response finish.

    cloudflared closes its control stream right after `unregisterConnection` and keeps the
    QUIC connection for its grace period; the edge must not cut requests still running on it,
    and closing the connection once they are done lets cloudflared exit early.
    """
    assert CLOUDFLARED is not None
    # Quick tunnels force one HA connection, so run the quick tunnel's credentials as a token.
    async with client.post(edge.api_url + "/tunnel") as resp:
        result = (await resp.json())["result"]
    token = base64.b64encode(json.dumps(
        {"a": result["account_tag"], "t": result["id"], "s": result["secret"]}).encode()).decode()
    host, port = edge.quic_address
    edges = [arg for _ in range(4) for arg in ("--edge", f"{host}:{port}")]
    proc = await asyncio.create_subprocess_exec(
        CLOUDFLARED, "tunnel", "--no-autoupdate", "--no-prechecks", *edges,
        "--ha-connections", "4", "--protocol", "quic", "--cacert", str(edge.ca_path),
        "--metrics", "127.0.0.1:0", "--grace-period", "30s",
        "run", "--token", token, "--url", origin.url,
        env={**os.environ, "HOME": str(tmp_path)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    log: list[str] = []
    base = "http://{}:{}".format(*edge.public_address)
    headers = {"Host": result["hostname"]}
    try:
        await _read_until(proc, log, "Registered tunnel connection", count=4)
        conns = edge.registry.connections()
        assert sorted(c.conn_index for c in conns) == [0, 1, 2, 3], "".join(log)
        async with held_requests(edge.public_address, result["hostname"], 4):
            assert [c.in_flight for c in conns] == [1, 1, 1, 1]  # one on each connection
        for i in range(8):
            async with client.get(f"{base}/echo/{i}", headers=headers) as resp:
                assert resp.status == 200

        async with client.get(f"{base}/sse", headers=headers) as sse:
            assert sse.status == 200
            assert await sse.content.readuntil(b"\n\n") == b"data: first\n\n"
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await _read_until(proc, log, "Unregistered tunnel connection", count=4, timeout=10)
            await eventually(lambda: len(edge.registry.connections()) == 1)
            assert edge.registry.connections()[0].draining
            async with client.get(f"{base}/echo/late", headers=headers) as resp:
                assert resp.status == 530  # nothing left to route to
            origin.sse_release.set()
            assert await sse.content.read() == b"data: second\n\n"
        async with asyncio.timeout(15):  # well inside the 30 s grace period
            while await proc.stdout.readline():  # type: ignore[union-attr]
                pass
            assert await proc.wait() == 0, "".join(log)
        assert time.monotonic() - started < 15
        await eventually(lambda: not edge.registry.connections())
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
