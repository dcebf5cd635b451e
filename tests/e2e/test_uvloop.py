"""Edge, connector and origin client on uvloop (what `nbtunnel[fast]` runs): uvloop's
transports are not asyncio's classes, so nothing may insist on them. Skipped without uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest

from nbtunnel.edge.server import Edge
from tests.e2e.conftest import Origin, stop_tunnel
from tests.e2e.test_http2_connector import start_h2_tunnel

uvloop = pytest.importorskip("uvloop")


@pytest.fixture
def event_loop_policy() -> Iterator[asyncio.AbstractEventLoopPolicy]:
    yield uvloop.EventLoopPolicy()


@pytest.mark.parametrize("protocol", ["quic", "http2"])
async def test_requests_through_a_tunnel_on_uvloop(
    edge: Edge, origin: Origin, client: aiohttp.ClientSession, protocol: str
) -> None:
    assert "uvloop" in type(asyncio.get_running_loop()).__module__
    tunnel = await start_h2_tunnel(edge, origin.url, ha=1, protocol=protocol)
    try:
        base = "http://{}:{}".format(*edge.public_address)
        for i in range(3):  # the second and third reuse the pooled origin connection
            async with client.post(f"{base}/echo/{i}", data=b"body",
                                   headers={"Host": tunnel.quick.hostname}) as resp:
                assert resp.status == 200, await resp.text()
                doc = await resp.json()
                assert doc["path"] == f"/echo/{i}" and doc["body"] == "body"
    finally:
        await stop_tunnel(tunnel)
