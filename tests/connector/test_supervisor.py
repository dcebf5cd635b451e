"""The supervisor's reconnect logic on the in-memory pair, with time on a manual clock.

The edge side is the real control handler (registration against a real store); the dial is
injected, so attempts can fail on demand and no test waits for real backoff or HA delays.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from nbtunnel.connector.events import ConnectionEvent, TunnelEvent
from nbtunnel.connector.ingress import Ingress
from nbtunnel.connector.supervisor import Connector, ConnectorConfig
from nbtunnel.core.credentials import Credentials
from nbtunnel.edge.control import ControlHandler
from nbtunnel.transport.base import TunnelConnection
from nbtunnel.transport.errors import ConnectTimeoutError, HandshakeError
from nbtunnel.transport.memory import MemoryConnection
from tests.e2e.conftest import eventually
from tests.manual_clock import ManualClock
from tests.memory_edge import MemoryEdge
from tests.memory_edge import memory_edge as _memory_edge


@dataclass
class FlakyDial:
    """Dials the memory edge; ``failures`` makes the next dials fail."""

    edge: MemoryEdge
    credentials: Credentials
    failures: list[Exception] = field(default_factory=list)
    dials: list[str] = field(default_factory=list)

    async def __call__(self, protocol: str, host: str, port: int, **_: Any) -> TunnelConnection:
        self.dials.append(protocol)
        if self.failures:
            raise self.failures.pop(0)
        return self.edge.connect(protocol)[1]

    @property
    def ends(self) -> list[MemoryConnection]:
        return self.edge.ends

    @property
    def control(self) -> ControlHandler:
        return self.edge.control


@pytest.fixture
async def memory_edge(tmp_path: Path) -> AsyncIterator[FlakyDial]:
    async with _memory_edge(tmp_path) as edge:
        t = edge.tunnel
        yield FlakyDial(edge, Credentials(t.account_tag, t.id, t.secret))


@dataclass
class Running:
    connector: Connector
    task: asyncio.Task[None]
    events: list[ConnectionEvent]

    def states(self, index: int = 0) -> list[str]:
        return [e.state for e in self.events if e.conn_index == index]


@pytest.fixture
async def start(memory_edge: FlakyDial) -> AsyncIterator[Callable[..., Running]]:
    running: list[Running] = []

    def go(clock: ManualClock, **config: Any) -> Running:
        connector = Connector(
            ConnectorConfig(edge=[("edge.test", 7844)], credentials=memory_edge.credentials,
                            ingress=Ingress.single("http_status:404"), grace_period=1,
                            **config),
            clock=clock, dial=memory_edge)
        events: list[ConnectionEvent] = []

        def observe(event: TunnelEvent) -> None:
            if isinstance(event, ConnectionEvent):
                events.append(event)

        connector.subscribe(observe)
        r = Running(connector, asyncio.get_running_loop().create_task(connector.run()), events)
        running.append(r)
        return r

    yield go
    for r in running:
        await r.connector.shutdown(grace=1)
        await asyncio.wait_for(r.task, 10)


async def test_ha_connections_start_after_the_first_registers_a_delay_apart(
    memory_edge: FlakyDial, start: Callable[..., Running],
) -> None:
    clock = ManualClock()
    r = start(clock, ha_connections=3, ha_start_delay=7.0)
    await asyncio.wait_for(r.connector.wait_ready(1), 5)
    await eventually(lambda: clock.sleeping(7.0) == 1 and clock.sleeping(14.0) == 1)
    assert memory_edge.dials == ["quic"]  # the others wait for the clock, not for real time
    clock.advance(7.0)
    await asyncio.wait_for(r.connector.wait_ready(2), 5)
    assert len(memory_edge.dials) == 2
    clock.advance(7.0)
    await asyncio.wait_for(r.connector.wait_ready(3), 5)
    assert {c.conn_index for c in memory_edge.control.registry.connections()} == {0, 1, 2}


async def test_failed_dials_back_off_then_register_and_reset_the_backoff(
    memory_edge: FlakyDial, start: Callable[..., Running],
) -> None:
    clock = ManualClock()
    memory_edge.failures = [HandshakeError("refused"), HandshakeError("refused")]
    r = start(clock, ha_connections=1)
    for attempt in (1, 2):
        await eventually(lambda n=attempt: r.states().count("reconnecting") == n)  # type: ignore[misc]
        delay = r.events[-1].delay
        assert 0 <= delay < 2 ** (attempt - 1)  # uniform below base * 2**retries
        assert "refused" in r.events[-1].detail
        await eventually(lambda: clock.sleeping() == 1)
        clock.advance(delay + 1e-6)
    await asyncio.wait_for(r.connector.wait_ready(1), 5)
    assert r.states() == ["connecting", "reconnecting", "connecting", "reconnecting",
                          "connecting", "registered"]
    memory_edge.ends[-1].close(0, "edge restarting")  # the edge drops an established one
    await eventually(lambda: r.states().count("reconnecting") == 3)
    assert r.events[-1].delay < 1  # registration reset the backoff
    assert "edge restarting" in r.events[-1].detail


async def test_shutdown_ends_a_backoff_wait_without_the_clock(
    memory_edge: FlakyDial, start: Callable[..., Running],
) -> None:
    clock = ManualClock()
    memory_edge.failures = [HandshakeError("refused")]
    r = start(clock, ha_connections=1)
    await eventually(lambda: clock.sleeping() == 1)
    await asyncio.wait_for(r.connector.shutdown(grace=1), 5)
    await asyncio.wait_for(r.task, 5)
    assert r.states()[-1] == "closed" and clock.sleeping() == 0


async def test_auto_falls_back_to_http2_when_the_quic_handshake_times_out(
    memory_edge: FlakyDial, start: Callable[..., Running],
) -> None:
    clock = ManualClock()
    memory_edge.failures = [ConnectTimeoutError("no QUIC handshake within 5s")]
    r = start(clock, ha_connections=1, protocol="auto")
    await eventually(lambda: clock.sleeping() == 1)
    clock.advance(r.events[-1].delay + 1e-6)
    await asyncio.wait_for(r.connector.wait_ready(1), 5)
    assert memory_edge.dials == ["quic", "http2"]
    [live] = memory_edge.control.registry.connections()
    assert live.protocol == "http2"
