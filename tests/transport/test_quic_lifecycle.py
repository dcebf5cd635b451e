"""Back-pressure, idle timeout, handshake-batch data, timeouts and clean server shutdown."""

from __future__ import annotations

import asyncio
import socket

import pytest

from nbtunnel.transport.errors import ConnectTimeoutError, TransportClosedError
from nbtunnel.transport.quic import QuicSettings, QuicTunnelConnection, connect
from nbtunnel.transport.quic.connection import QuicTunnelConnection as _Conn
from nbtunnel.transport.quic.stream import WRITE_CHUNK
from nbtunnel.transport.tls import LocalCA

from .util import dial, edge

SMALL_WINDOWS = {
    "stream_high_water": 128 << 10,
    "stream_low_water": 32 << 10,
    "stream_receive_window": 256 << 10,
}


async def wait_until_stalled(progress: list[int], writer: asyncio.Task[None]) -> None:
    """Return once the writer made no progress across many event-loop turns."""
    last, still = -1, 0
    while still < 50:
        await asyncio.sleep(0.005)
        if writer.done():
            return
        still = still + 1 if progress[0] == last else 0
        last = progress[0]


async def test_writer_blocks_on_a_peer_that_does_not_read(
    ca: LocalCA, pair: tuple[str, str]
) -> None:
    client_backend, server_backend = pair
    accepted: asyncio.Queue[object] = asyncio.Queue()
    release = asyncio.Event()
    received = bytearray()

    async def lazy_reader(conn: QuicTunnelConnection) -> None:
        stream = await conn.accept_stream()
        await accepted.put(stream)
        await release.wait()
        while data := await stream.read():
            received.extend(data)
        await conn.wait_closed()

    total = 8 << 20
    async with edge(ca, server_backend, lazy_reader, **SMALL_WINDOWS) as server:
        async with dial(ca, server, client_backend, **SMALL_WINDOWS) as conn:
            stream = conn.open_stream()
            progress = [0]
            peak = [0]

            async def writer() -> None:
                chunk = b"z" * WRITE_CHUNK
                while progress[0] < total:
                    await stream.write(chunk)
                    progress[0] += len(chunk)
                    peak[0] = max(peak[0], conn._send_buffer_size(stream.stream_id))
                stream.write_eof()

            task = asyncio.create_task(writer())
            await asyncio.wait_for(accepted.get(), 5)
            await wait_until_stalled(progress, task)
            assert not task.done(), "writer never blocked"
            # peer credit (window) + our high-water mark + one chunk, nothing more
            bound = (256 << 10) + (128 << 10) + 2 * WRITE_CHUNK
            assert progress[0] <= bound, progress[0]
            assert peak[0] <= (128 << 10) + WRITE_CHUNK, peak[0]
            release.set()
            await asyncio.wait_for(task, 30)
            assert peak[0] <= (128 << 10) + WRITE_CHUNK, peak[0]
            for _ in range(500):
                if len(received) == total:
                    break
                await asyncio.sleep(0.01)
            assert len(received) == total


async def test_idle_timeout_when_peer_vanishes(ca: LocalCA, pair: tuple[str, str]) -> None:
    client_backend, server_backend = pair
    server_conns: list[QuicTunnelConnection] = []

    async def handler(conn: QuicTunnelConnection) -> None:
        server_conns.append(conn)
        with pytest.raises(TransportClosedError):
            await conn.accept_stream()

    async with edge(ca, server_backend, handler, idle_timeout=0.6) as server:
        conn = await connect(
            "127.0.0.1",
            server.sockname[1],
            cafile=str(ca.ca_path),
            settings=QuicSettings(backend=client_backend, idle_timeout=0.6),
        )
        for _ in range(100):
            if server_conns:
                break
            await asyncio.sleep(0.01)
        conn._terminate("test: vanished")  # socket closed, no CONNECTION_CLOSE sent
        (server_conn,) = server_conns
        await asyncio.wait_for(server_conn.wait_closed(), 5)
        assert server_conn.closed
        assert server_conn.close_reason == "idle timeout"


async def test_keepalive_keeps_an_idle_connection_open(ca: LocalCA, backend: str) -> None:
    async def handler(conn: QuicTunnelConnection) -> None:
        await conn.wait_closed()

    async with edge(ca, backend, handler, idle_timeout=0.4) as server:
        async with dial(ca, server, backend, idle_timeout=0.4, keepalive=0.1) as conn:
            await asyncio.sleep(1.0)  # 2.5 idle timeouts
            assert not conn.closed


async def test_data_in_handshake_batch_is_not_lost(
    ca: LocalCA, pair: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's first stream bytes ride in the datagram that completes the server handshake."""
    client_backend, server_backend = pair
    original = _Conn._on_handshake_completed

    def eager(self: _Conn, event: object) -> None:
        original(self, event)
        if self._is_client:  # queue data before the Finished flight is transmitted
            stream = self.open_stream()
            self._send(stream.stream_id, b"registerConnection", True)

    monkeypatch.setattr(_Conn, "_on_handshake_completed", eager)
    queued_at_start: list[int] = []
    got: list[bytes] = []

    async def handler(conn: QuicTunnelConnection) -> None:
        queued_at_start.append(len(conn._accept_queue))
        stream = await conn.accept_stream()
        got.append(await stream.readexactly(18))
        await conn.wait_closed()

    async with edge(ca, server_backend, handler) as server:
        async with dial(ca, server, client_backend):
            for _ in range(200):
                if got:
                    break
                await asyncio.sleep(0.01)
    assert got == [b"registerConnection"]
    assert queued_at_start == [1], "stream bytes were expected in the handshake batch"


async def test_connect_timeout(backend: str) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        with pytest.raises(ConnectTimeoutError):
            await connect(
                "127.0.0.1",
                silent.getsockname()[1],
                settings=QuicSettings(backend=backend, handshake_timeout=0.3),
            )
    finally:
        silent.close()
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_server_close_cancels_handlers_and_leaves_no_task(
    ca: LocalCA, pair: tuple[str, str]
) -> None:
    client_backend, server_backend = pair
    cancelled: list[bool] = []
    started = asyncio.Event()

    async def forever(conn: QuicTunnelConnection) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async with edge(ca, server_backend, forever) as server:
        conn = await connect(
            "127.0.0.1",
            server.sockname[1],
            cafile=str(ca.ca_path),
            settings=QuicSettings(backend=client_backend),
        )
        await asyncio.wait_for(started.wait(), 5)
        await server.close()
        assert cancelled == [True]
        assert not server.connections
        await asyncio.wait_for(conn.wait_closed(), 5)
        assert "edge shutting down" in conn.close_reason
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == {asyncio.current_task()}
