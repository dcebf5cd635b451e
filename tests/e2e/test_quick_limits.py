"""Quick tunnels need no account: their creation is rate-limited per client address and idle
ones expire (issue 9, finding 8). Time is a ManualClock the tests advance."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from nbtunnel.connector.quick import QuickTunnelRateLimited, request_quick_tunnel
from nbtunnel.edge.server import Edge, EdgeConfig
from tests.e2e.conftest import Origin, eventually, start_tunnel, stop_tunnel
from tests.manual_clock import ManualClock

EXPIRY = 3600.0
SWEEP = 60.0


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def edge(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Edge]:
    config = EdgeConfig(state_dir=tmp_path / "edge", quic_port=0, http_port=0, clock=clock,
                        quick_tunnels_per_minute=10, quick_tunnel_burst=20,
                        quick_tunnel_idle_expiry=EXPIRY)
    async with Edge(config) as e:
        yield e


async def _create(session: aiohttp.ClientSession, edge: Edge) -> aiohttp.ClientResponse:
    async with session.post(f"{edge.api_url}/tunnel", data=b"") as resp:
        await resp.read()
        return resp


def _quick_count(edge: Edge) -> int:
    assert edge.store is not None
    return sum(1 for t in edge.store.tunnels() if t.kind == "quick")


async def test_quick_tunnel_creation_is_rate_limited_per_client(
    edge: Edge, clock: ManualClock
) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(20):  # the burst
            assert (await _create(s, edge)).status == 200
        async with s.post(f"{edge.api_url}/tunnel", data=b"") as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "6"
            text = await resp.text()
        assert text.startswith("error code: 1015\n")  # what trycloudflare answers
        assert "at most 10 quick tunnels per minute" in text
        with pytest.raises(QuickTunnelRateLimited, match=r"rate-limiting .* error code 1015"):
            await request_quick_tunnel(edge.api_url)
        assert _quick_count(edge) == 20
        clock.advance(6)  # one token back
        assert (await _create(s, edge)).status == 200
        assert (await _create(s, edge)).status == 429
    # another client address (127.0.0.2 is loopback too) has its own bucket
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as other:
        assert (await _create(other, edge)).status == 200
    assert _quick_count(edge) == 22


async def _swept(edge: Edge, clock: ManualClock, seconds: float) -> None:
    """Advance time (at least one sweep interval) and wait for the expiry task's sweep."""
    assert seconds >= SWEEP and edge.quick_expiry is not None
    expiry = edge.quick_expiry
    done = expiry.sweeps
    clock.advance(seconds)
    await eventually(lambda: expiry.sweeps > done)


async def test_idle_quick_tunnels_expire_and_connected_ones_stay(
    edge: Edge, clock: ManualClock, origin: Origin
) -> None:
    assert edge.store is not None
    never = await request_quick_tunnel(edge.api_url)
    used = await start_tunnel(edge, origin.url, ha=1)
    used_id: uuid.UUID = used.quick.credentials.tunnel_id
    try:
        await _swept(edge, clock, EXPIRY - 1)
        assert edge.store.get_tunnel(never.credentials.tunnel_id) is not None
        await _swept(edge, clock, SWEEP)
        assert edge.store.get_tunnel(never.credentials.tunnel_id) is None
        assert edge.store.resolve(never.hostname) is None
        await _swept(edge, clock, 10 * EXPIRY)  # connected: never expires
        assert edge.store.get_tunnel(used_id) is not None
    finally:
        await stop_tunnel(used)
    await eventually(lambda: not edge.registry.connections(used_id))
    await _swept(edge, clock, EXPIRY - 1)
    assert edge.store.get_tunnel(used_id) is not None
    await _swept(edge, clock, SWEEP)
    assert edge.store.get_tunnel(used_id) is None
    assert edge.store.resolve(used.hostname) is None
    host, port = edge.public_address
    async with aiohttp.ClientSession() as s, s.get(
            f"http://{host}:{port}/", headers={"Host": used.hostname}) as resp:
        assert resp.status == 404


async def test_the_embedded_edge_does_not_rate_limit_its_own_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notebook opening 30 tunnels in a loop talks to its private embedded edge: no 429."""
    from nbtunnel.api.edges import start_local_edge

    monkeypatch.setenv("NBTUNNEL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NBTUNNEL_HTTP_PORT", "0")
    edge = await start_local_edge()
    try:
        async with aiohttp.ClientSession() as s:
            statuses = [(await _create(s, edge)).status for _ in range(30)]
        assert statuses == [200] * 30
    finally:
        await edge.close()
