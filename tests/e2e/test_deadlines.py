"""Every wait of the public front has a deadline (issue 9 finding 5); the tests inject short
ones. A front out of file descriptors backs off and logs once per episode."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nbtunnel.edge.limits import FrontLimits
from nbtunnel.edge.server import Edge, EdgeConfig
from tests.e2e.conftest import Origin, Tunnel, eventually, start_tunnel, stop_tunnel
from tests.e2e.rawhttp import read_response, wait_closed

LIMITS = FrontLimits(head_timeout=1.0, body_timeout=1.0, keepalive_timeout=1.0)


@pytest.fixture
async def quick(tmp_path: Path, origin: Origin) -> AsyncIterator[Tunnel]:
    async with Edge(EdgeConfig(state_dir=tmp_path / "edge", quic_port=0, http_port=0,
                               front=LIMITS)) as edge:
        t = await start_tunnel(edge, origin.url, ha=1)
        try:
            yield t
        finally:
            await stop_tunnel(t)


async def test_head_deadline_is_total_not_per_read(quick: Tunnel) -> None:
    """One byte every 0.3 s used to restart the head timeout forever. (Not 0.2 s: a byte due
    at the very moment of the 1 s deadline can reach the closing socket, whose kernel then
    answers with a reset instead of the FIN this test waits for.)"""
    reader, writer = await asyncio.open_connection(*quick.edge.public_address)
    head = f"GET /echo/slow HTTP/1.1\r\nHost: {quick.hostname}\r\nX-Pad: {'p' * 200}\r\n\r\n"

    async def drip() -> None:
        with contextlib.suppress(ConnectionError):
            for byte in head.encode():
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.3)

    dripping = asyncio.get_running_loop().create_task(drip())
    try:
        async with asyncio.timeout(10):
            resp = await read_response(reader)
        assert resp.status == 408 and resp.header("Connection") == "close"
        assert await wait_closed(reader, 5)
    finally:
        dripping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dripping
        writer.close()


async def test_stalled_body_gets_408_and_the_exchange_is_released(quick: Tunnel) -> None:
    reader, writer = await asyncio.open_connection(*quick.edge.public_address)
    try:
        writer.write(f"POST /upload HTTP/1.1\r\nHost: {quick.hostname}\r\n"
                     "Content-Length: 1000\r\n\r\n0123456789".encode())
        await writer.drain()
        async with asyncio.timeout(10):
            resp = await read_response(reader)
        assert resp.status == 408
        assert await wait_closed(reader, 5)
        conns = quick.edge.registry.connections(quick.quick.credentials.tunnel_id)
        await eventually(lambda: all(c.in_flight == 0 for c in conns))
    finally:
        writer.close()


async def test_idle_keepalive_connection_is_closed(quick: Tunnel) -> None:
    reader, writer = await asyncio.open_connection(*quick.edge.public_address)
    try:
        writer.write(f"GET /echo/k HTTP/1.1\r\nHost: {quick.hostname}\r\n\r\n".encode())
        assert (await read_response(reader)).status == 200
        assert await wait_closed(reader, 10)  # keepalive_timeout=1 s, default 75 s
    finally:
        writer.close()


async def test_out_of_descriptors_backs_off_with_one_log_line(
    quick: Tunnel, caplog: pytest.LogCaptureFixture
) -> None:
    """Fill the descriptor table with idle clients: accept() fails with EMFILE. The front
    logs the episode once (no traceback per attempt) and serves again once they leave."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    clients: list[socket.socket] = []
    address = quick.edge.public_address
    caplog.set_level(logging.WARNING)
    resource.setrlimit(resource.RLIMIT_NOFILE, (_open_fds() + 40, hard))
    try:
        with contextlib.suppress(OSError):
            while len(clients) < 200:
                sock = socket.socket()
                clients.append(sock)
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    sock.connect(address)
        assert quick.edge.front is not None
        listener = quick.edge.front.listener
        episodes, refused = listener.starved_episodes, listener.refused_accepts
        # asyncio retries every second: wait for several failed attempts of one episode
        await eventually(lambda: listener.refused_accepts >= refused + 3, timeout=20)
        assert listener.starved_episodes == episodes + 1
    finally:
        for sock in clients:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(f"GET /echo/again HTTP/1.1\r\nHost: {quick.hostname}\r\n\r\n".encode())
        async with asyncio.timeout(10):
            assert (await read_response(reader)).status == 200
    finally:
        writer.close()
    starved = [r for r in caplog.records if "file descriptors" in r.getMessage()]
    assert len(starved) == 1 and starved[0].exc_info is None
    assert not [r for r in caplog.records if r.name == "asyncio"]  # no traceback per attempt


def _open_fds() -> int:
    return len(list(Path("/proc/self/fd").iterdir()))


async def test_tls_handshake_deadline_on_the_http2_connector_port(tmp_path: Path) -> None:
    """A TCP peer on the connector port that never starts TLS is dropped at the deadline
    (asyncio's default would hold it for 60 s)."""
    async with Edge(EdgeConfig(state_dir=tmp_path / "edge", quic_port=0, http_port=0,
                               tls_handshake_timeout=0.5)) as edge:
        address = edge.http2_address
        assert address is not None
        reader, writer = await asyncio.open_connection(*address)
        try:
            assert await wait_closed(reader, 10)
        finally:
            writer.close()
