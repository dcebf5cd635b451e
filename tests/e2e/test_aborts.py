"""Clients that vanish mid-transfer: a reset stream is never written again, so the connector's
shared QUIC connections survive (issue 9 finding 4, issue 14 item 4)."""

from __future__ import annotations

import asyncio
import socket
import struct

import aiohttp

from tests.e2e.conftest import Tunnel, eventually, held_requests


def _hard_close(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a killed client or a load generator does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _connection_ids(t: Tunnel) -> set[object]:
    conns = t.edge.registry.connections(t.quick.credentials.tunnel_id)
    return {c.connection_id for c in conns if not c.transport.closed}


async def _idle(t: Tunnel) -> None:
    conns = t.edge.registry.connections(t.quick.credentials.tunnel_id)
    await eventually(lambda: all(c.in_flight == 0 for c in conns), timeout=30)


async def _all_still_serve(t: Tunnel, client: aiohttp.ClientSession, before: set[object]) -> None:
    conns = t.edge.registry.connections(t.quick.credentials.tunnel_id)
    async with held_requests(t.edge.public_address, t.hostname, len(conns)):
        assert [c.in_flight for c in conns] == [1] * len(conns)  # each connection serves one
    for _ in range(4):
        async with client.get(f"{t.base}/echo/after", headers={"Host": t.hostname}) as resp:
            assert resp.status == 200
    assert _connection_ids(t) == before  # the same four registrations, none replaced
    assert t.connector.ready_connections == 4


async def test_dropping_300_downloading_clients_at_once_keeps_every_connection(
    tunnel: Tunnel, client: aiohttp.ClientSession
) -> None:
    before = _connection_ids(tunnel)
    assert len(before) == 4
    host, port = tunnel.edge.public_address

    started = 0
    all_started = asyncio.Event()
    drop = asyncio.Event()

    async def download() -> None:
        nonlocal started
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET /download/500000000 HTTP/1.1\r\nHost: {tunnel.hostname}\r\n\r\n"
                     .encode())
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        started += 1
        if started == 300:
            all_started.set()
        while not drop.is_set():  # keep the body flowing until everyone drops at once
            await reader.read(65536)
        _hard_close(writer)

    tasks = [asyncio.get_running_loop().create_task(download()) for _ in range(300)]
    await asyncio.wait_for(all_started.wait(), 60)
    drop.set()
    await asyncio.gather(*tasks)
    await _idle(tunnel)
    await _all_still_serve(tunnel, client, before)


async def test_aborted_uploads_keep_every_connection(
    tunnel: Tunnel, client: aiohttp.ClientSession
) -> None:
    before = _connection_ids(tunnel)
    host, port = tunnel.edge.public_address

    async def aborted_upload(i: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"POST /upload HTTP/1.1\r\nHost: {tunnel.hostname}\r\n"
                     f"Content-Length: 50000000\r\n\r\n".encode())
        for _ in range(32):
            writer.write(b"u" * 65536)
            await writer.drain()
        if i % 2:
            _hard_close(writer)
        else:  # a clean FIN mid-body: the edge sees the client leave and resets the stream
            writer.write_eof()
            await reader.read()
            writer.close()

    await asyncio.gather(*[aborted_upload(i) for i in range(20)])
    await _idle(tunnel)
    await _all_still_serve(tunnel, client, before)
