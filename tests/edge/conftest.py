"""Fixtures for the edge's middle floor on the in-memory transport pair (no QUIC, no TLS)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
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
from nbtunnel.edge.stores.base import TunnelRecord
from nbtunnel.transport.memory import MemoryConnection, MemoryStream
from tests.memory_edge import MemoryEdge, memory_edge

EdgeParts = MemoryEdge


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[EdgeParts]:
    async with memory_edge(tmp_path) as edge:
        yield edge


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



def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long fuzz runs only when asked for: `pytest -m fuzz tests/edge`."""
    if "fuzz" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="long fuzz run: pytest -m fuzz tests/edge")
    for item in items:
        if item.get_closest_marker("fuzz") is not None:
            item.add_marker(skip)
