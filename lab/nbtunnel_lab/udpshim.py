"""A UDP forwarder in front of the tunnel path, so the lab can blackhole it.

The connector dials the shim; each connector socket gets its own socket toward the target (the
relay, or the edge when the tunnel vantage point is off). While a ``blackhole`` fault is active
every datagram is dropped both ways, exactly what a broken network path looks like to QUIC.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from nbtunnel_lab.faults import FaultSet

log = logging.getLogger("nbtunnel_lab.udpshim")
Addr = tuple[str, int]


class _Upstream(asyncio.DatagramProtocol):
    def __init__(self, shim: UdpShim, client: Addr) -> None:
        self.shim = shim
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.shim.to_client(data, self.client)


class UdpShim(asyncio.DatagramProtocol):
    """Listen on ``host:0`` and forward to ``target``; ``dropped`` counts blackholed packets."""

    def __init__(self, target: Addr, faults: FaultSet) -> None:
        self.target = target
        self.faults = faults
        self.address: Addr = ("", 0)
        self.dropped = 0
        self.forwarded = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._upstreams: dict[Addr, _Upstream] = {}
        self._pending: dict[Addr, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str = "127.0.0.1") -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, 0))
        self.address = transport.get_extra_info("sockname")[:2]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        if self.faults.blackholed():
            self.dropped += 1
            return
        up = self._upstreams.get(addr)
        if up is not None and up.transport is not None:
            self.forwarded += 1
            up.transport.sendto(data)
        elif addr in self._pending:
            self._pending[addr].append(data)
        else:
            self._pending[addr] = [data]
            task = asyncio.get_running_loop().create_task(self._open(addr))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _open(self, client: Addr) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, proto = await loop.create_datagram_endpoint(
                lambda: _Upstream(self, client), remote_addr=self.target)
        except OSError as exc:
            log.warning("udp shim cannot reach %s: %s", self.target, exc)
            self._pending.pop(client, None)
            return
        self._upstreams[client] = proto
        for data in self._pending.pop(client, []):
            transport.sendto(data)

    def to_client(self, data: bytes, client: Addr) -> None:
        if self.faults.blackholed():
            self.dropped += 1
            return
        if self._transport is not None:
            self.forwarded += 1
            self._transport.sendto(data, client)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for up in self._upstreams.values():
            if up.transport is not None:
                up.transport.close()
        self._upstreams.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        await asyncio.sleep(0)
