"""Unauthenticated peers on the connector port: whatever they send, the edge bounds the work
and state it spends on them, and registered connectors keep serving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from nbtunnel.core.rpcmsg import encode_bootstrap
from nbtunnel.edge.server import Edge, EdgeConfig
from nbtunnel.transport.quic import QuicStream, QuicTunnelConnection, connect
from tests.e2e.conftest import Origin, Tunnel, start_tunnel, stop_tunnel
from tests.manual_clock import ManualClock

REGISTRATION_TIMEOUT = 15.0


@pytest.fixture
async def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def edge(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Edge]:
    config = EdgeConfig(state_dir=tmp_path / "edge", quic_port=0, http_port=0,
                        registration_timeout=REGISTRATION_TIMEOUT, clock=clock)
    async with Edge(config) as e:
        yield e


@pytest.fixture
async def tunnel(edge: Edge, origin: Origin) -> AsyncIterator[Tunnel]:
    t = await start_tunnel(edge, origin.url, ha=2)
    try:
        yield t
    finally:
        await stop_tunnel(t)


async def _ok(client: aiohttp.ClientSession, t: Tunnel) -> None:
    async with client.get(f"{t.base}/echo/ok", headers={"Host": t.hostname}) as resp:
        assert resp.status == 200


async def _bootstrap_round_trip(stream: QuicStream, question_id: int) -> None:
    """Send a Bootstrap and wait for the edge's Return (proves the connection is served)."""
    await stream.write(encode_bootstrap(question_id))
    assert await asyncio.wait_for(stream.read(), 5)


async def test_connection_that_never_registers_is_closed_at_the_deadline(
    edge: Edge, tunnel: Tunnel, clock: ManualClock, client: aiohttp.ClientSession
) -> None:
    conn: QuicTunnelConnection = await connect(*edge.quic_address, cafile=str(edge.ca_path))
    try:
        stream = conn.open_stream()
        await _bootstrap_round_trip(stream, 0)
        assert clock.sleeping(REGISTRATION_TIMEOUT) == 1  # only this connection's deadline
        clock.advance(REGISTRATION_TIMEOUT - 1)
        await _bootstrap_round_trip(stream, 1)  # not yet: still served
        clock.advance(1)
        await asyncio.wait_for(conn.wait_closed(), 5)
        assert "no registration within 15s" in conn.close_reason
    finally:
        conn.close()
    assert len(edge.registry.connections(tunnel.quick.credentials.tunnel_id)) == 2
    await _ok(client, tunnel)
