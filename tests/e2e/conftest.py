"""Fixtures for end-to-end tests: a real edge, a real origin, a real connector, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from nbtunnel.connector.ingress import Ingress
from nbtunnel.connector.quick import QuickTunnel, request_quick_tunnel
from nbtunnel.connector.supervisor import Connector, ConnectorConfig
from nbtunnel.edge.server import Edge, EdgeConfig

FAST_HA_START = 0.05
"""HA start delay for tests that do not test it (cloudflared's 1 s; tests/connector does)."""


@contextlib.asynccontextmanager
async def held_requests(address: tuple[str, int], hostname: str, n: int) -> AsyncIterator[None]:
    """``n`` requests to the origin's `/hold` in flight at once (each answered with its head,
    then silent) until the block ends: with ``n`` connections registered, the edge's
    least-busy pick gives each request its own connection."""
    writers: list[asyncio.StreamWriter] = []
    try:
        for _ in range(n):
            reader, writer = await asyncio.open_connection(*address)
            writers.append(writer)
            writer.write(f"GET /hold HTTP/1.1\r\nHost: {hostname}\r\n\r\n".encode())
            async with asyncio.timeout(10):
                assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        yield
    finally:
        for writer in writers:
            writer.close()


async def eventually(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until cond() holds (checked every 10 ms), failing after timeout."""
    async with asyncio.timeout(timeout):
        while not cond():  # noqa: ASYNC110 - polling a plain predicate
            await asyncio.sleep(0.01)


@dataclass
class Origin:
    url: str
    sse_release: asyncio.Event
    uploads: list[str]
    holds: list[str]


def _echo_payload(request: web.Request, body: bytes) -> dict[str, object]:
    return {
        "method": request.method,
        "path": request.path,
        "query": request.query_string,
        "raw_path": request.raw_path,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body": body.decode("latin-1"),
    }


async def _echo(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    return web.json_response(_echo_payload(request, body), headers={"X-Origin": "test"})


async def _download(request: web.Request) -> web.StreamResponse:
    size = int(request.match_info["size"])
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    resp.content_length = size
    await resp.prepare(request)
    block = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB, deterministic
    sent = 0
    while sent < size:
        chunk = block[: min(len(block), size - sent)]
        await resp.write(chunk)
        sent += len(chunk)
    await resp.write_eof()
    return resp


def download_sha256(size: int) -> str:
    block = hashlib.sha256(b"seed").digest() * 2048
    h = hashlib.sha256()
    sent = 0
    while sent < size:
        chunk = block[: min(len(block), size - sent)]
        h.update(chunk)
        sent += len(chunk)
    return h.hexdigest()


@pytest.fixture
async def origin() -> AsyncIterator[Origin]:
    release = asyncio.Event()
    uploads: list[str] = []
    holds: list[str] = []

    async def upload(request: web.Request) -> web.StreamResponse:
        h = hashlib.sha256()
        n = 0
        async for chunk in request.content.iter_any():
            h.update(chunk)
            n += len(chunk)
        uploads.append(h.hexdigest())
        return web.json_response({"sha256": h.hexdigest(), "bytes": n})

    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: first\n\n")
        await release.wait()  # the test releases this only after the client saw "first"
        await resp.write(b"data: second\n\n")
        await resp.write_eof()
        return resp

    async def ws(request: web.Request) -> web.StreamResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await sock.send_str(msg.data)
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await sock.send_bytes(msg.data)
        return sock

    async def hold(request: web.Request) -> web.StreamResponse:
        """Send the head, then stay silent until the client (the connector) goes away."""
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        holds.append("open")
        index = len(holds) - 1
        while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        holds[index] = "released"
        return resp

    app = web.Application(client_max_size=1024**3)
    app.router.add_get("/hold", hold)
    app.router.add_route("*", "/echo{tail:.*}", _echo)
    app.router.add_get("/download/{size}", _download)
    app.router.add_post("/upload", upload)
    app.router.add_get("/sse", sse)
    app.router.add_get("/ws", ws)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield Origin(f"http://127.0.0.1:{port}", release, uploads, holds)
    finally:
        release.set()
        await runner.cleanup()


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    async with Edge(EdgeConfig(state_dir=tmp_path / "edge", quic_port=0, http_port=0)) as e:
        yield e


@dataclass
class Tunnel:
    edge: Edge
    connector: Connector
    quick: QuickTunnel
    task: asyncio.Task[None]

    @property
    def hostname(self) -> str:
        return self.quick.hostname

    @property
    def base(self) -> str:
        host, port = self.edge.public_address
        return f"http://{host}:{port}"


async def start_tunnel(edge: Edge, service: str, ha: int = 4) -> Tunnel:
    quick = await request_quick_tunnel(edge.api_url)
    connector = Connector(ConnectorConfig(
        edge=[edge.quic_address], credentials=quick.credentials,
        ingress=Ingress.single(service), cacert=str(edge.ca_path), ha_connections=ha,
        grace_period=5, ha_start_delay=FAST_HA_START,
    ))
    task = asyncio.get_running_loop().create_task(connector.run())
    await asyncio.wait_for(connector.wait_ready(ha), 20)
    return Tunnel(edge, connector, quick, task)


async def stop_tunnel(t: Tunnel) -> None:
    await t.connector.shutdown(grace=2)
    await asyncio.wait_for(t.task, 10)


@pytest.fixture
async def tunnel(edge: Edge, origin: Origin) -> AsyncIterator[Tunnel]:
    t = await start_tunnel(edge, origin.url)
    try:
        yield t
    finally:
        await stop_tunnel(t)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False,
                                     timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s
