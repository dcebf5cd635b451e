"""Every stream ends on both peers: once both directions are over, neither our table nor the
QUIC library keeps it, also when it was aborted while another stream kept the packets full.

The soak (bench/soak.py) found the connector growing by ~1 MB per abandoned download: qh3 1.9
took such a stream off its send queue when its RESET_STREAM did not fit behind the data that
filled the packet, so the frame was never sent and the stream (with its buffered response)
stayed on both peers for the life of the connection. And both processes grew by a few bytes
per request for good: qh3 remembered every finished stream's ID in a set.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tracemalloc

import pytest

from nbtunnel.transport.errors import TransportError
from nbtunnel.transport.quic import QuicStream, QuicTunnelConnection
from nbtunnel.transport.tls import LocalCA

from .test_quic_streams import echo_handler
from .util import dial, each_stream, edge

ABORTS = 40
BULK = 8 << 20


async def _sink(stream: QuicStream) -> None:
    """Read to the end, then end our side too (a reset ends both by itself)."""
    with contextlib.suppress(TransportError):
        while await stream.read():
            pass
        stream.write_eof()


async def _all_ended(conns: list[QuicTunnelConnection]) -> None:
    """Wait (bounded) until no connection holds a stream; a leak fails with the counts."""
    try:
        async with asyncio.timeout(20):
            while any(c.held_streams() != (0, 0) for c in conns):  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # the last ACKs are not events we can await
    except TimeoutError:
        counts = [c.held_streams() for c in conns]
        pytest.fail(f"streams still held (ours, library) per connection: {counts}")


@pytest.mark.parametrize("how", ["reset", "stop_sending"])
async def test_aborts_behind_full_packets_end_on_both_peers(
    ca: LocalCA, pair: tuple[str, str], how: str
) -> None:
    client_backend, server_backend = pair
    server_conns: list[QuicTunnelConnection] = []

    async def handler(conn: QuicTunnelConnection) -> None:
        server_conns.append(conn)
        await each_stream(conn, _sink)

    async with edge(ca, server_backend, handler) as server:
        async with dial(ca, server, client_backend) as conn:
            bulk = conn.open_stream()

            async def flood() -> None:  # keeps every packet full of stream data
                await bulk.write(os.urandom(BULK))
                bulk.write_eof()
                assert await bulk.read() == b""

            flooding = asyncio.get_running_loop().create_task(flood())
            for _ in range(ABORTS):
                stream = conn.open_stream()
                await stream.write(b"x")
                await asyncio.sleep(0)  # let a transmit build packets with the flood
                if how == "reset":
                    stream.reset(5)  # RESET_STREAM + STOP_SENDING
                else:
                    stream.write_eof()
                    stream.stop_reading(5)  # STOP_SENDING only
            await flooding
            await _all_ended([conn, *server_conns])
            assert not conn.closed, conn.close_reason


def _library_bytes(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes held by allocations made in the QUIC library's connection module."""
    keep = [tracemalloc.Filter(True, "*/quic/connection.py")]
    return sum(stat.size for stat in snapshot.filter_traces(keep).statistics("filename"))


async def test_finished_streams_leave_no_state_behind(ca: LocalCA, backend: str) -> None:
    async def exchange(conn: QuicTunnelConnection) -> None:
        stream = conn.open_stream()
        await stream.write(b"q")
        stream.write_eof()
        assert await stream.read() == b"q"
        assert await stream.read() == b""

    server_conns: list[QuicTunnelConnection] = []

    async def handler(conn: QuicTunnelConnection) -> None:
        server_conns.append(conn)
        await echo_handler(conn)

    tracemalloc.start()
    try:
        async with edge(ca, backend, handler) as server:
            async with dial(ca, server, backend) as conn:
                for _ in range(300):  # warm-up: pools, packet spaces, first resizes
                    await exchange(conn)
                await _all_ended([conn, *server_conns])
                before = _library_bytes(tracemalloc.take_snapshot())
                for _ in range(2000):
                    await exchange(conn)
                await _all_ended([conn, *server_conns])
                grown = _library_bytes(tracemalloc.take_snapshot()) - before
    finally:
        tracemalloc.stop()
    # qh3's set of finished IDs: an int (32 B) and a set slot per stream, on both peers
    assert grown < 32 * 1024, f"{grown} bytes more after 2,000 streams"
