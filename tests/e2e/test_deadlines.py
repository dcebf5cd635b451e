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

LIMITS = FrontLimits(head_timeout=1.0, body_timeout=1.0, keepalive_timeout=1.0,
                     send_timeout=1.0)


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


async def _a_new_client_is_served(t: Tunnel) -> None:
    reader, writer = await asyncio.open_connection(*t.edge.public_address)
    try:
        writer.write(f"GET /echo/new HTTP/1.1\r\nHost: {t.hostname}\r\n\r\n".encode())
        async with asyncio.timeout(10):
            assert (await read_response(reader)).status == 200
    finally:
        writer.close()


@pytest.mark.parametrize(("method", "target", "body"), [
    ("GET", f"/download/{1 << 30}", b""),  # relayed in the client connection's task
    ("POST", "/echo/big", b"x" * (8 << 20)),  # relayed by the exchange's own task
], ids=["download", "upload-echo"])
async def test_client_that_never_reads_is_cut_at_the_send_deadline(
    quick: Tunnel, method: str, target: str, body: bytes
) -> None:
    """A visitor that never reads its response (a tiny receive buffer, a zero TCP window)
    held the connector's origin request forever: the front's writes waited with no deadline.
    Once it has taken no byte for send_timeout the edge closes its connection and resets the
    data stream, so the connector releases the origin request."""
    edge_conns = quick.edge.registry.connections(quick.quick.credentials.tunnel_id)
    connector_conns = list(quick.connector.connections.values())
    served = sum(c.served for c in edge_conns)
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, quick.edge.public_address)
        await loop.sock_sendall(sock, f"{method} {target} HTTP/1.1\r\nHost: {quick.hostname}\r\n"
                                      f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        # the exchange ended on the edge, and the connector let go of the origin request
        await eventually(lambda: sum(c.served for c in edge_conns) == served + 1
                         and not any(c.in_flight for c in edge_conns)
                         and not any(c.in_flight for c in connector_conns))
        received = bytearray()
        async with asyncio.timeout(10):  # what the kernel holds, then EOF or a reset
            with contextlib.suppress(ConnectionResetError):
                while data := await loop.sock_recv(sock, 65536):
                    received += data
        head, _, rest = bytes(received).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        assert len(rest) < length  # cut, not the whole response
    finally:
        sock.close()
    await _a_new_client_is_served(quick)


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
    await _a_new_client_is_served(quick)
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
