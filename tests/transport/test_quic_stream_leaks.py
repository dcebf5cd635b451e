"""Every stream ends on both peers: once both directions are over, neither our table nor the
QUIC library keeps it, also when it was aborted while another stream kept the packets full.

The soak (bench/soak.py) found the connector growing by ~1 MB per abandoned download: qh3 1.9
took such a stream off its send queue when its RESET_STREAM did not fit behind the data that
filled the packet, so the frame was never sent and the stream (with its buffered response)
stayed on both peers for the life of the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import pytest

from nbtunnel.transport.errors import TransportClosedError, TransportError
from nbtunnel.transport.quic import QuicStream, QuicTunnelConnection
from nbtunnel.transport.tls import LocalCA

from .util import dial, edge

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
        async with asyncio.TaskGroup() as tg:
            while True:
                try:
                    stream = await conn.accept_stream()
                except TransportClosedError:
                    return
                tg.create_task(_sink(stream))

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
