"""Fixtures for the edge's middle floor on the in-memory transport pair (no QUIC, no TLS)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nbtunnel.core.registration import RegistrationClient, RegistrationResult
from nbtunnel.core.schema import (
    ClientInfo,
    ConnectionOptions,
    RegisterConnectionParams,
    RegistrationError,
    TunnelAuth,
)
from nbtunnel.edge.control import ControlHandler
from nbtunnel.edge.registry import LiveConnection, Registry
from nbtunnel.edge.stores.base import TunnelRecord
from nbtunnel.edge.stores.sqlite import SqliteStore
from nbtunnel.transport.memory import MemoryConnection, MemoryStream, memory_pair

HOSTNAME = "app.example"


@dataclass
class EdgeParts:
    """A store with one routed tunnel, a registry and the control handler serving pairs."""

    store: SqliteStore
    registry: Registry
    control: ControlHandler
    tunnel: TunnelRecord
    changes: list[tuple[str, LiveConnection]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def connect(self) -> tuple[MemoryConnection, MemoryConnection]:
        """A new connection whose edge end the control handler serves."""
        edge_end, connector_end = memory_pair()
        self.tasks.append(asyncio.get_running_loop().create_task(self.control.serve(edge_end)))
        return edge_end, connector_end


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[EdgeParts]:
    store = SqliteStore(tmp_path / "edge.sqlite3")
    tunnel = await store.create_tunnel("t", account_tag="acct")
    await store.add_route(HOSTNAME, tunnel.id)
    registry = Registry()
    changes: list[tuple[str, LiveConnection]] = []
    control = ControlHandler(store, registry, on_change=lambda what, live: changes.append(
        (what, live)))
    p = EdgeParts(store, registry, control, tunnel, changes)
    try:
        yield p
    finally:
        for task in p.tasks:
            task.cancel()
        await asyncio.gather(*p.tasks, return_exceptions=True)
        await store.aclose()


@dataclass
class FakeConnector:
    """The connector's control plane, by hand: registerConnection on the control stream."""

    conn: MemoryConnection
    control: MemoryStream
    rpc: RegistrationClient

    async def call(self) -> list[object]:
        await self.control.write(self.rpc.data_to_send())
        while True:
            data = await self.control.read()
            assert data, "the edge ended the control stream"
            events = self.rpc.receive_data(data)
            if events:
                out = self.rpc.data_to_send()
                if out:
                    await self.control.write(out)
                return events


async def register(conn: MemoryConnection, tunnel: TunnelRecord, index: int = 0, *,
                   secret: bytes | None = None, client_id: bytes = b"c" * 16
                   ) -> tuple[FakeConnector, object]:
    """Register one connection; returns the fake connector and the edge's answer."""
    fake = FakeConnector(conn, await conn.control_stream(), RegistrationClient())
    fake.rpc.register(RegisterConnectionParams(
        auth=TunnelAuth(tunnel.account_tag, tunnel.secret if secret is None else secret),
        tunnel_id=tunnel.id.bytes, conn_index=index,
        options=ConnectionOptions(client=ClientInfo(client_id, [], "test", "arch"))))
    events = await fake.call()
    result = events[0]
    assert isinstance(result, RegistrationResult)
    return fake, result.response


def registered(response: object) -> bool:
    return not isinstance(response, RegistrationError)

