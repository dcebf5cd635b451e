"""Bad input: each case gets a typed error or the right status page, and everyone else is
still served."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import aiohttp
import pytest

from nbtunnel.connector.events import ConnectionEvent, TunnelEvent
from nbtunnel.connector.ingress import Ingress
from nbtunnel.connector.quick import request_quick_tunnel
from nbtunnel.connector.supervisor import Connector, ConnectorConfig
from nbtunnel.core.credentials import Credentials
from nbtunnel.core.streams import DATA_SIGNATURE, PROTOCOL_VERSION
from nbtunnel.edge.server import Edge
from nbtunnel.transport.errors import StreamResetError, TransportError
from tests.e2e.conftest import Origin, Tunnel, eventually, start_tunnel, stop_tunnel
from tests.e2e.hostile import answer_with, hostile_connector


async def _ok(client: aiohttp.ClientSession, t: Tunnel) -> None:
    async with client.get(f"{t.base}/echo/ok", headers={"Host": t.hostname}) as resp:
        assert resp.status == 200


async def test_unknown_hostname_gets_404_text_or_html(
    tunnel: Tunnel, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{tunnel.base}/", headers={"Host": "nope.localhost",
                                                      "User-Agent": "curl/8.0"}) as resp:
        assert resp.status == 404
        assert resp.headers["Content-Type"].startswith("text/plain")
        assert "nope.localhost" in await resp.text()
    async with client.get(f"{tunnel.base}/", headers={"Host": "nope.localhost",
                                                      "Accept": "text/html"}) as resp:
        assert resp.status == 404
        assert (await resp.text()).startswith("<!doctype html>")
    await _ok(client, tunnel)


async def test_tunnel_without_connection_gets_530(
    edge: Edge, client: aiohttp.ClientSession
) -> None:
    quick = await request_quick_tunnel(edge.api_url)
    host, port = edge.public_address
    async with client.get(f"http://{host}:{port}/", headers={"Host": quick.hostname}) as resp:
        assert resp.status == 530
        assert "no live connector" in await resp.text()


async def test_origin_refusing_connections_gets_502_with_cause(
    edge: Edge, client: aiohttp.ClientSession
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # closed again before use: nothing listens there
    t = await start_tunnel(edge, f"http://127.0.0.1:{dead_port}", ha=1)
    try:
        async with client.get(f"{t.base}/x", headers={"Host": t.hostname}) as resp:
            assert resp.status == 502
            text = await resp.text()
        assert "Unable to reach the origin service" in text
        assert "refused" in text
    finally:
        await stop_tunnel(t)


async def test_oversized_request_head_gets_431(
    tunnel: Tunnel, client: aiohttp.ClientSession
) -> None:
    host, port = tunnel.edge.public_address
    reader, writer = await asyncio.open_connection(host, port)
    big = "a" * 8000
    writer.write(f"GET / HTTP/1.1\r\nHost: {tunnel.hostname}\r\n".encode())
    for i in range(12):
        writer.write(f"X-Big-{i}: {big}\r\n".encode())
    writer.write(b"\r\n")
    await writer.drain()
    status_line = await reader.readline()
    assert status_line.startswith(b"HTTP/1.1 431")
    writer.close()
    await _ok(client, tunnel)


async def test_malformed_request_gets_400(tunnel: Tunnel, client: aiohttp.ClientSession) -> None:
    host, port = tunnel.edge.public_address
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"THIS IS NOT HTTP\r\n\r\n")
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 400")
    writer.close()
    await _ok(client, tunnel)


async def test_wrong_secret_is_refused_and_edge_keeps_serving(
    tunnel: Tunnel, client: aiohttp.ClientSession
) -> None:
    good = tunnel.quick.credentials
    bad = Credentials(good.account_tag, good.tunnel_id, b"y" * 32)
    events: list[TunnelEvent] = []
    refused = asyncio.Event()

    def observe(ev: TunnelEvent) -> None:
        events.append(ev)
        if isinstance(ev, ConnectionEvent) and ev.state == "reconnecting":
            refused.set()

    c = Connector(ConnectorConfig(edge=[tunnel.edge.quic_address], credentials=bad,
                                  ingress=Ingress.single("http_status:204"),
                                  cacert=str(tunnel.edge.ca_path), ha_connections=1))
    c.subscribe(observe)
    task = asyncio.get_running_loop().create_task(c.run())
    try:
        await asyncio.wait_for(refused.wait(), 15)
    finally:
        await c.shutdown(grace=1)
        await asyncio.wait_for(task, 10)
    detail = next(e.detail for e in events
                  if isinstance(e, ConnectionEvent) and e.state == "reconnecting")
    assert "Unauthorized: Invalid tunnel secret" in detail
    assert len(tunnel.edge.registry.connections(good.tunnel_id)) == 4
    await _ok(client, tunnel)


async def test_garbage_on_a_data_stream_resets_only_that_stream(
    edge: Edge, origin: Origin, client: aiohttp.ClientSession
) -> None:
    t = await start_tunnel(edge, origin.url, ha=1)
    try:
        (live,) = edge.registry.connections(t.quick.credentials.tunnel_id)
        stream = live.transport.open_stream()
        await stream.write(b"\x00garbage that is no preamble" * 10)
        stream.write_eof()
        with pytest.raises(StreamResetError):  # the connector resets it (no clean FIN)
            while await stream.read():
                pass
        # a valid preamble followed by a garbage Cap'n Proto message
        stream = live.transport.open_stream()
        await stream.write(DATA_SIGNATURE + PROTOCOL_VERSION + b"\x05\x00\x00\x00" + b"\xff" * 64)
        stream.write_eof()
        with contextlib.suppress(StreamResetError, TransportError):
            while await stream.read():
                pass
        for _ in range(5):
            await _ok(client, t)  # same connection, still serving
        assert not live.transport.closed
    finally:
        await stop_tunnel(t)


async def test_truncated_connect_response_gets_502(
    tunnel: Tunnel, client: aiohttp.ClientSession
) -> None:
    """A misbehaving connector answers with half a ConnectResponse: the eyeball gets a 502 and
    the other tunnel keeps working."""
    half = answer_with(DATA_SIGNATURE + PROTOCOL_VERSION + b"\x00\x00\x00\x00\x10\x00")
    async with hostile_connector(tunnel.edge, half) as evil:
        async with client.get(f"{tunnel.base}/", headers={"Host": evil.hostname}) as resp:
            assert resp.status == 502
            assert "connector" in (await resp.text()).lower()
    await _ok(client, tunnel)


async def test_client_leaving_a_silent_response_releases_the_origin(
    tunnel: Tunnel, origin: Origin, client: aiohttp.ClientSession
) -> None:
    """A long-poll whose client hangs up must not hold the origin connection forever: the edge
    notices the hang-up, resets the stream, and the connector closes the origin request."""
    host, port = tunnel.edge.public_address
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /hold HTTP/1.1\r\nHost: {tunnel.hostname}\r\n\r\n".encode())
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    assert origin.holds == ["open"]
    writer.close()
    await eventually(lambda: origin.holds == ["released"], timeout=10)
    await _ok(client, tunnel)
