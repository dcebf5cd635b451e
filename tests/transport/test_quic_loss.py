"""Bulk transfers through a UDP relay that loses, duplicates and reorders datagrams.

The whole stack on real sockets (our UDP endpoint's batches, the protocol hooks, the qh3
adapter's lean paths, loss recovery, congestion and flow control), every pair of libraries:
each byte arrives, in order, both ways, and the connection stays usable.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

import pytest

from nbtunnel.transport.quic import QuicServer, QuicStream, QuicTunnelConnection
from nbtunnel.transport.tls import LocalCA

from .util import dial, each_stream, edge


class LossyRelay(asyncio.DatagramProtocol):
    """Forwards between the first client that writes to it and ``server``."""

    def __init__(self, server: tuple[str, int], seed: int, loss: float, dup: float,
                 reorder: float) -> None:
        self.server = server
        self.rng = random.Random(seed)
        self.loss, self.dup, self.reorder = loss, dup, reorder
        self.client: Any = None
        self.transport: Any = None
        self.dropped = self.forwarded = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if addr == self.server:
            to = self.client
        else:
            self.client = addr
            to = self.server
        if to is None:
            return
        if self.rng.random() < self.loss:
            self.dropped += 1
            return
        copies = 2 if self.rng.random() < self.dup else 1
        loop = asyncio.get_running_loop()
        for _ in range(copies):
            self.forwarded += 1
            if self.rng.random() < self.reorder:
                loop.call_later(self.rng.random() * 0.003, self._send, data, to)
            else:
                self._send(data, to)

    def _send(self, data: bytes, to: Any) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, to)


class _RelayedServer:
    """What ``dial`` needs of a server: the relay's port instead of the edge's."""

    def __init__(self, port: int) -> None:
        self.sockname = ("127.0.0.1", port)


@pytest.mark.parametrize(("loss", "dup", "reorder", "datagram"), [
    (0.02, 0.0, 0.0, 16384),  # the default between loopback addresses (qh3 only)
    (0.03, 0.02, 0.1, 0),  # 1452 bytes at most: many more packets
], ids=["loss-16k", "loss+dup+reorder-1452"])
async def test_bulk_both_ways_through_a_lossy_relay(
    ca: LocalCA, pair: tuple[str, str], loss: float, dup: float, reorder: float, datagram: int
) -> None:
    client_backend, server_backend = pair
    size = 4 << 20
    up_payload = random.Random(1).randbytes(size)
    down_payload = random.Random(2).randbytes(size)

    async def serve(stream: QuicStream) -> None:
        digest, length = hashlib.sha256(), 0
        while data := await stream.read():
            digest.update(data)
            length += len(data)
        await stream.write(digest.digest())
        if length > 1:
            await stream.write(down_payload)
        stream.write_eof()

    async def handler(conn: QuicTunnelConnection) -> None:
        await each_stream(conn, serve)

    async with edge(ca, server_backend, handler, loopback_datagram_size=datagram) as server:
        assert isinstance(server, QuicServer)
        loop = asyncio.get_running_loop()
        relay_transport, relay = await loop.create_datagram_endpoint(
            lambda: LossyRelay(("127.0.0.1", server.sockname[1]), 5, loss, dup, reorder),
            local_addr=("127.0.0.1", 0))
        try:
            port = relay_transport.get_extra_info("sockname")[1]
            async with dial(ca, _RelayedServer(port), client_backend,  # type: ignore[arg-type]
                            loopback_datagram_size=datagram) as conn:
                stream = conn.open_stream()

                async def transfer() -> bytes:
                    await stream.write(up_payload)
                    stream.write_eof()
                    assert await stream.readexactly(32) == hashlib.sha256(up_payload).digest()
                    down = hashlib.sha256()
                    while data := await stream.read():
                        down.update(data)
                    return down.digest()

                assert await asyncio.wait_for(transfer(), 60) == hashlib.sha256(
                    down_payload).digest()
                # still usable afterwards
                again = conn.open_stream()
                await again.write(b"x")
                again.write_eof()
                assert await asyncio.wait_for(again.readexactly(32), 10) == hashlib.sha256(
                    b"x").digest()
            assert relay.dropped > 2  # (2-3 % of a few hundred to several thousand)
        finally:
            relay_transport.close()
