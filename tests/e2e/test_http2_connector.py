"""Our connector over cloudflared's HTTP/2 transport (`--protocol http2`) against our edge."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from nbtunnel.connector.ingress import Ingress
from nbtunnel.connector.quick import request_quick_tunnel
from nbtunnel.connector.supervisor import Connector, ConnectorConfig
from nbtunnel.edge.server import Edge, EdgeConfig
from tests.e2e.conftest import (
    FAST_HA_START,
    Origin,
    Tunnel,
    download_sha256,
    eventually,
    stop_tunnel,
)

MB = 1024 * 1024


async def start_h2_tunnel(edge: Edge, service: str, *, ha: int = 2, protocol: str = "http2",
                          address: tuple[str, int] | None = None) -> Tunnel:
    quick = await request_quick_tunnel(edge.api_url)
    connector = Connector(ConnectorConfig(
        edge=[address or edge.quic_address], credentials=quick.credentials,
        ingress=Ingress.single(service), cacert=str(edge.ca_path), ha_connections=ha,
        grace_period=5, protocol=protocol, ha_start_delay=FAST_HA_START,
    ))
    task = asyncio.get_running_loop().create_task(connector.run())
    await asyncio.wait_for(connector.wait_ready(ha), 30)
    return Tunnel(edge, connector, quick, task)


async def _tcp_listening(address: tuple[str, int]) -> bool:
    try:
        _, writer = await asyncio.open_connection(*address)
    except OSError:
        return False
    writer.close()
    return True


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    """An edge on ephemeral ports: its HTTP/2 listener always gets the QUIC port number."""
    async with Edge(EdgeConfig(state_dir=tmp_path / "edge", quic_port=0, http_port=0)) as e:
        assert await _tcp_listening(e.quic_address)
        yield e


@pytest.fixture
async def h2tunnel(edge: Edge, origin: Origin) -> AsyncIterator[Tunnel]:
    t = await start_h2_tunnel(edge, origin.url)
    try:
        yield t
    finally:
        await stop_tunnel(t)


def _headers(t: Tunnel, **extra: str) -> dict[str, str]:
    return {"Host": t.hostname, **extra}


async def test_registers_as_http2(h2tunnel: Tunnel) -> None:
    live = h2tunnel.edge.registry.connections()
    assert len(live) == 2
    assert {c.protocol for c in live} == {"http2"}
    assert {c.protocol for c in h2tunnel.connector.connections.values()} == {"http2"}


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_methods_headers_and_query(
    h2tunnel: Tunnel, client: aiohttp.ClientSession, method: str
) -> None:
    body = b"payload-post" if method == "POST" else None
    async with client.request(method, f"{h2tunnel.base}/echo/a%20b?x=1&y=two", data=body,
                              headers=_headers(h2tunnel, **{"X-Test": "yes"})) as resp:
        assert resp.status == 200
        assert resp.headers["X-Origin"] == "test"
        doc = await resp.json()
    assert doc["method"] == method
    assert doc["path"] == "/echo/a b"
    assert doc["query"] == "x=1&y=two"
    got = {k.lower(): v for k, v in doc["headers"]}
    assert got["x-test"] == "yes"
    assert got["host"] == h2tunnel.hostname
    assert doc["body"] == (body.decode() if body else "")


async def test_20mb_download_and_upload(
    h2tunnel: Tunnel, client: aiohttp.ClientSession, origin: Origin
) -> None:
    size = 20 * MB
    h = hashlib.sha256()
    async with client.get(f"{h2tunnel.base}/download/{size}", headers=_headers(h2tunnel)) as r:
        assert r.status == 200
        async for chunk in r.content.iter_chunked(256 * 1024):
            h.update(chunk)
    assert h.hexdigest() == download_sha256(size)
    data = bytes(range(256)) * (4 * 4096)  # 4 MiB
    async with client.post(f"{h2tunnel.base}/upload", data=data,
                           headers=_headers(h2tunnel)) as r:
        assert r.status == 200
        doc = await r.json()
    assert doc == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


async def test_sse_first_event_before_origin_finishes(
    h2tunnel: Tunnel, client: aiohttp.ClientSession, origin: Origin
) -> None:
    async with client.get(f"{h2tunnel.base}/sse", headers=_headers(h2tunnel)) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 10)
        assert first == b"data: first\n\n"
        assert not origin.sse_release.is_set()
        origin.sse_release.set()
        assert await resp.content.read() == b"data: second\n\n"


async def test_websocket_echo(h2tunnel: Tunnel, client: aiohttp.ClientSession) -> None:
    async with client.ws_connect(f"{h2tunnel.base}/ws", headers=_headers(h2tunnel)) as ws:
        for i in range(200):
            if i % 2:
                await ws.send_bytes(b"bin-%d" % i)
                assert (await ws.receive_bytes(timeout=10)) == b"bin-%d" % i
            else:
                await ws.send_str(f"msg-{i}")
                assert (await ws.receive_str(timeout=10)) == f"msg-{i}"


async def test_origin_down_gets_502(edge: Edge, client: aiohttp.ClientSession) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    t = await start_h2_tunnel(edge, f"http://127.0.0.1:{dead_port}", ha=1)
    try:
        async with client.get(f"{t.base}/x", headers={"Host": t.hostname}) as resp:
            assert resp.status == 502
    finally:
        await stop_tunnel(t)


async def test_graceful_shutdown_finishes_in_flight_sse(
    h2tunnel: Tunnel, origin: Origin, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{h2tunnel.base}/sse", headers=_headers(h2tunnel)) as resp:
        assert await resp.content.readuntil(b"\n\n") == b"data: first\n\n"
        loop = asyncio.get_running_loop()
        shutdown = loop.create_task(h2tunnel.connector.shutdown(grace=10))
        live = h2tunnel.edge.registry.connections()
        await eventually(lambda: all(c.draining for c in live))  # the edge saw unregister
        origin.sse_release.set()
        assert await resp.content.read() == b"data: second\n\n"
    await asyncio.wait_for(shutdown, 15)
    await asyncio.wait_for(h2tunnel.task, 10)
    async with client.get(f"{h2tunnel.base}/echo/late", headers=_headers(h2tunnel)) as r:
        assert r.status == 530


async def test_remote_config_push_over_http2(h2tunnel: Tunnel) -> None:
    """The edge's update-configuration request reaches Connector.apply_remote_config."""
    live = h2tunnel.edge.registry.connections()[0]
    config = b'{"ingress":[{"service":"http_status:418"}]}'
    version, err = await live.transport.update_configuration(7, config)
    assert (version, err) == (7, "")
    assert h2tunnel.connector.config_version == 7


@contextlib.asynccontextmanager
async def _quic_blackholed(target: tuple[str, int]) -> AsyncIterator[tuple[str, int]]:
    """A port number whose UDP swallows everything and whose TCP forwards to `target`."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    port = udp.getsockname()[1]
    conns: set[asyncio.Task[None]] = set()

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        w.close()

    async def forward(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conns.add(task)
        try:
            ur, uw = await asyncio.open_connection(*target)
            await asyncio.gather(pipe(r, uw), pipe(ur, w))
        finally:
            conns.discard(task)
            w.close()

    server = await asyncio.start_server(forward, "127.0.0.1", port)
    try:
        yield ("127.0.0.1", port)
    finally:
        server.close()
        for task in list(conns):
            task.cancel()
        await asyncio.gather(*conns, return_exceptions=True)
        udp.close()


async def test_auto_falls_back_to_http2_when_quic_is_blackholed(
    edge: Edge, origin: Origin, client: aiohttp.ClientSession
) -> None:
    async with _quic_blackholed(edge.quic_address) as address:
        t = await start_h2_tunnel(edge, origin.url, ha=1, protocol="auto", address=address)
        try:
            assert [c.protocol for c in edge.registry.connections()] == ["http2"]
            async with client.get(f"{t.base}/echo/fb", headers=_headers(t)) as resp:
                assert resp.status == 200
                assert (await resp.json())["path"] == "/echo/fb"
        finally:
            await stop_tunnel(t)


async def test_latin1_header_bytes_survive_the_http2_transport(h2tunnel: Tunnel) -> None:
    """A visitor's non-UTF-8 field bytes reach the origin unchanged over HTTP/2 too (and
    never fail the connector's HTTP/2 connection)."""
    from tests.e2e.rawhttp import roundtrip

    data = (f"GET /echo/l HTTP/1.1\r\nHost: {h2tunnel.hostname}\r\n".encode()
            + b"X-Latin: caf\xe9\r\n\r\n")
    (resp,), _ = await roundtrip(h2tunnel.edge.public_address, data, ["GET"])
    seen = [(str(n), str(v)) for n, v in resp.json()["headers"]]  # type: ignore[union-attr]
    assert [v.encode("utf-8", "surrogateescape") for n, v in seen if n.lower() == "x-latin"] == [
        b"caf\xe9"]
    (again,), _ = await roundtrip(h2tunnel.edge.public_address, data, ["GET"])
    assert again.status == 200


async def test_a_head_over_the_connectors_header_list_bound_fails_that_request_only(
    h2tunnel: Tunnel, client: aiohttp.ClientSession,
) -> None:
    """A visitor head the front accepts (under 64 KiB, 256 fields) can still exceed the 64 KiB
    header list the connector's HTTP/2 takes (HPACK adds 32 bytes per field): the connector
    answers that request 431; its tunnel connection, and everyone else's requests on it,
    carry on (the connection used to end with ENHANCE_YOUR_CALM)."""
    before = {id(c) for c in h2tunnel.connector.connections.values()}
    big = {f"X-H-{i:03d}": "v" * 300 for i in range(200)}  # ~62 KB, ~68 KiB listed
    for _ in range(4):  # whichever connection each request takes
        async with client.get(f"{h2tunnel.base}/echo/big",
                              headers=_headers(h2tunnel, **big)) as resp:
            assert resp.status == 431
    async with client.get(f"{h2tunnel.base}/echo/small", headers=_headers(h2tunnel)) as resp:
        assert resp.status == 200
    assert {id(c) for c in h2tunnel.connector.connections.values()} == before
