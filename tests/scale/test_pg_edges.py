"""Two edges on one PostgreSQL: the API of either one sees the same control plane, and a
hostname raced for by two accounts through different edges goes to exactly one of them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from nbtunnel.edge.bootstrap import create_token
from nbtunnel.edge.server import Edge, EdgeConfig
from tests.control.conftest import Api
from tests.scale.test_stores import until


@pytest.fixture
async def two_edges(pg_url: str, tmp_path: Path) -> AsyncIterator[tuple[Edge, Edge]]:
    async with (
        Edge(EdgeConfig(state_dir=tmp_path / "a", quic_port=0, http_port=0, store=pg_url)) as a,
        Edge(EdgeConfig(state_dir=tmp_path / "b", quic_port=0, http_port=0, store=pg_url)) as b,
    ):
        yield a, b


async def test_hostname_race_between_accounts_on_two_edges(two_edges: tuple[Edge, Edge]) -> None:
    a, b = two_edges
    assert a.store is not None and b.store is not None
    async with aiohttp.ClientSession() as s:
        api_a = Api(s, a.api_url, await create_token(a.store, "alice"))
        api_b = Api(s, b.api_url, await create_token(b.store, "bob"))
        ta = await api_a.ok("POST", "/tunnels", {"name": "t"})
        tb = await api_b.ok("POST", "/tunnels", {"name": "t"})
        rounds = 25
        for i in range(rounds):
            host = f"race{i}.example.com"
            (sa, da), (sb, db) = await asyncio.gather(
                api_a.call("POST", "/routes", {"hostname": host, "tunnel_id": ta["id"]}),
                api_b.call("POST", "/routes", {"hostname": host, "tunnel_id": tb["id"]}))
            assert sorted((sa, sb)) == [201, 409], (host, da, db)
            loser = db if sa == 201 else da
            assert "belongs to another account" in loser["errors"][0]["message"]
            winner = ta["id"] if sa == 201 else tb["id"]
            await until(lambda h=host, w=winner: str(a.store.resolve(h)) == w  # type: ignore
                        and str(b.store.resolve(h)) == w)  # type: ignore[union-attr]
        # either edge's API lists what the other created, from the shared database
        routes_a = await api_a.ok("GET", "/routes")
        routes_b = await api_b.ok("GET", "/routes")
        assert len(routes_a) + len(routes_b) == rounds
        got = await api_a.ok("GET", f"/tunnels/{ta['id']}")
        assert got["name"] == "t"
        status, _ = await api_b.call("GET", f"/tunnels/{ta['id']}")
        assert status == 404  # bob cannot see alice's tunnel through any edge
