"""The supervisor on Cloudflare's address pool (memory edge, injected dial): the edge's
duplicate-connection answer (EDUPCONN) and dial errors move a connection to another address,
as cloudflared's IpAddrFallback does."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nbtunnel.connector.discovery import EdgeAddr
from nbtunnel.connector.edgepool import EdgePool
from nbtunnel.connector.ingress import Ingress
from nbtunnel.connector.supervisor import Connector, ConnectorConfig
from nbtunnel.core.credentials import Credentials
from nbtunnel.core.schema import RegistrationError
from nbtunnel.transport.base import TunnelConnection
from nbtunnel.transport.errors import HandshakeError
from tests.manual_clock import ManualClock
from tests.memory_edge import MemoryEdge, memory_edge

A, B = EdgeAddr("198.41.192.7", 7844), EdgeAddr("198.41.200.7", 7844)


@dataclass
class AddressDial:
    """Dials the memory edge, recording which edge address each attempt used."""

    edge: MemoryEdge
    refuse: set[str] = field(default_factory=set)  # addresses whose dial fails
    hosts: list[str] = field(default_factory=list)

    async def __call__(self, protocol: str, host: str, port: int, **_: Any) -> TunnelConnection:
        self.hosts.append(host)
        if host in self.refuse:
            raise HandshakeError(f"connection refused by {host}")
        return self.edge.connect(protocol)[1]


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[MemoryEdge]:
    async with memory_edge(tmp_path) as e:
        yield e


def _connector(edge: MemoryEdge, dial: AddressDial) -> tuple[Connector, ManualClock]:
    t = edge.tunnel
    clock = ManualClock()
    # region 1 (A) first: this rng keeps the region order on a tie
    pool = EdgePool([[A], [B]], rng=random.Random(0))
    connector = Connector(ConnectorConfig(
        edge=[], pool=pool, credentials=Credentials(t.account_tag, t.id, t.secret),
        ingress=Ingress.single("http_status:404"), ha_connections=1, grace_period=1),
        clock=clock, dial=dial)
    return connector, clock


async def _run_until_ready(connector: Connector, clock: ManualClock) -> asyncio.Task[None]:
    task = asyncio.get_running_loop().create_task(connector.run())
    async with asyncio.timeout(10):
        while connector.ready_connections < 1:
            clock.advance(60.0)  # any backoff wait ends at once
            await asyncio.sleep(0.01)
    return task


async def test_edupconn_moves_the_connection_to_another_address(edge: MemoryEdge) -> None:
    answers = [RegistrationError("EDUPCONN", should_retry=True)]
    real_check = edge.control.check

    async def check(params: Any) -> RegistrationError | None:
        return answers.pop(0) if answers else await real_check(params)

    edge.control.check = check  # type: ignore[method-assign]  # the edge answers EDUPCONN once
    dial = AddressDial(edge)
    connector, clock = _connector(edge, dial)
    task = await _run_until_ready(connector, clock)
    try:
        assert dial.hosts == [A.ip, B.ip]  # refused on A with EDUPCONN, registered on B
        assert connector.connections[0].target.host == B.ip
    finally:
        await connector.shutdown(grace=1)
        await asyncio.wait_for(task, 10)


async def test_a_dial_error_moves_the_connection_to_another_address(edge: MemoryEdge) -> None:
    dial = AddressDial(edge, refuse={A.ip})
    connector, clock = _connector(edge, dial)
    task = await _run_until_ready(connector, clock)
    try:
        assert dial.hosts == [A.ip, B.ip]
    finally:
        await connector.shutdown(grace=1)
        await asyncio.wait_for(task, 10)
