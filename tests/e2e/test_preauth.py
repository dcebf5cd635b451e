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
from tests.e2e.hostile import answer_with, hostile_connector
from tests.hostile_capnp import (
    connect_response_with_zero_size_metadata,
    rpc_call_with_zero_size_cap_table,
)
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


def _connection_ids(edge: Edge, t: Tunnel) -> set[object]:
    return {c.connection_id for c in edge.registry.connections(t.quick.credentials.tunnel_id)}


async def test_amplifying_message_on_stream_0_closes_only_that_connection(
    edge: Edge, tunnel: Tunnel, client: aiohttp.ClientSession
) -> None:
    """Three 120-byte messages declaring 8 M zero-size elements each, before authentication:
    the edge refuses the first at once and closes that connection; the legitimate connector
    keeps the very same connections."""
    before = _connection_ids(edge, tunnel)
    conn = await connect(*edge.quic_address, cafile=str(edge.ca_path))
    try:
        stream = conn.open_stream()
        await stream.write(b"".join(rpc_call_with_zero_size_cap_table(question_id=q)
                                    for q in range(3)))
        await asyncio.wait_for(conn.wait_closed(), 5)
        assert "traversal limit" in conn.close_reason
    finally:
        conn.close()
    await _ok(client, tunnel)
    assert _connection_ids(edge, tunnel) == before


async def test_amplifying_connect_response_from_a_connector_gets_502(
    edge: Edge, tunnel: Tunnel, client: aiohttp.ClientSession
) -> None:
    """A quick-tunnel connector (no login needed) answers a request with a 48-byte
    ConnectResponse declaring 8 M metadata entries: its visitor gets a 502 naming the cause,
    other tunnels keep serving on the same connections."""
    before = _connection_ids(edge, tunnel)
    amplifying = answer_with(connect_response_with_zero_size_metadata(), fin=False)
    async with hostile_connector(edge, amplifying) as evil:
        for _ in range(2):
            async with client.get(f"{tunnel.base}/", headers={"Host": evil.hostname}) as resp:
                assert resp.status == 502
                assert "traversal limit" in await resp.text()
            await _ok(client, tunnel)
    assert _connection_ids(edge, tunnel) == before


async def test_http2_connection_that_never_registers_is_closed_at_the_deadline(
    edge: Edge, clock: ManualClock
) -> None:
    """The same deadline on the HTTP/2 port (TCP+TLS at the QUIC port number)."""
    from nbtunnel.transport.http2.connector import dial

    if edge.http2_address is None:
        pytest.skip("the TCP port of the QUIC port number was taken: no HTTP/2 listener")
    conn = await dial(*edge.http2_address, cafile=str(edge.ca_path))
    try:
        stream = await asyncio.wait_for(conn.control_stream(), 5)
        await stream.write(encode_bootstrap(0))
        assert await asyncio.wait_for(stream.read(), 5)
        assert clock.sleeping(REGISTRATION_TIMEOUT) == 1
        clock.advance(REGISTRATION_TIMEOUT)
        await asyncio.wait_for(conn.wait_closed(), 5)
    finally:
        conn.close()


async def test_unfinished_calls_beyond_the_cap_close_the_connection(
    edge: Edge, tunnel: Tunnel, client: aiohttp.ClientSession
) -> None:
    """Bootstraps that are never finished pile up answers: at the cap the edge aborts the RPC
    session and closes the connection; registered connections are untouched."""
    from nbtunnel.core.rpc import RpcLimits

    before = _connection_ids(edge, tunnel)
    conn = await connect(*edge.quic_address, cafile=str(edge.ca_path))
    try:
        stream = conn.open_stream()
        cap = RpcLimits().max_answers
        await stream.write(b"".join(encode_bootstrap(q) for q in range(cap + 1)))
        await asyncio.wait_for(conn.wait_closed(), 5)
        assert f"calls outstanding (limit {cap})" in conn.close_reason
    finally:
        conn.close()
    await _ok(client, tunnel)
    assert _connection_ids(edge, tunnel) == before


async def test_streams_a_connector_opens_besides_the_control_stream_are_reset(
    edge: Edge, tunnel: Tunnel, client: aiohttp.ClientSession
) -> None:
    """cloudflared opens only stream 0; bytes on any other stream it opens would sit unread in
    the edge's buffers (up to the connection window, 16 MiB): the edge resets them."""
    from nbtunnel.transport.errors import StreamResetError

    conn = await connect(*edge.quic_address, cafile=str(edge.ca_path))
    try:
        control = conn.open_stream()
        await _bootstrap_round_trip(control, 0)
        for _ in range(3):
            extra = conn.open_stream()
            # one small write: a write racing the reset would hit the separate rule that a
            # reset stream is never written again (issue 9, finding 4)
            await extra.write(b"x" * 1000)
            with pytest.raises(StreamResetError):
                await asyncio.wait_for(extra.read(), 5)
        await _bootstrap_round_trip(control, 1)  # the connection itself is still served
    finally:
        conn.close()
    await _ok(client, tunnel)
