"""Against Cloudflare's real edge and api.trycloudflare.com: opt-in, never in CI.

Run with `NBTUNNEL_LIVE_CLOUDFLARE=1 pytest -m live tests/cloudflare/test_live_cloudflare.py`.
It uses the production path unchanged: system DNS (DoT fallback), the bundled roots, the
quick API, one QUIC connection; then fetches the public URL for up to 60 s (a fresh hostname
can answer 530 for a while).
"""

from __future__ import annotations

import asyncio
import contextlib
import os

import aiohttp
import pytest

from nbtunnel.connector.cloudflare import CloudflareOptions, open_quick
from nbtunnel.connector.ingress import Ingress
from nbtunnel.connector.supervisor import Connector, ConnectorConfig

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(os.environ.get("NBTUNNEL_LIVE_CLOUDFLARE") != "1",
                       reason="talks to Cloudflare over the internet: set "
                       "NBTUNNEL_LIVE_CLOUDFLARE=1 and run with -m live"),
]


async def test_quick_tunnel_on_cloudflare() -> None:
    edge, quick = await open_quick(CloudflareOptions())
    connector = Connector(ConnectorConfig(
        edge=[], credentials=quick.credentials, ingress=Ingress.single("hello_world"),
        pool=edge.pool, trust=edge.trust, ha_connections=1))
    task = asyncio.create_task(connector.run())
    try:
        async with asyncio.timeout(30):
            await connector.wait_ready(1)
        details = connector.connections[0].details
        assert details is not None and details.location_name
        status = 0
        async with aiohttp.ClientSession() as s, asyncio.timeout(90):
            while status != 200:
                with contextlib.suppress(aiohttp.ClientError):
                    async with s.get(quick.url) as resp:
                        status = resp.status
                if status != 200:
                    await asyncio.sleep(3)
        print(f"live: {quick.url} via {connector.connections[0].edge} at "
              f"{details.location_name}")
    finally:
        await connector.shutdown(grace=2)
        with contextlib.suppress(asyncio.CancelledError):
            await task
