"""Interop with the real cloudflared binary; skipped unless NBTUNNEL_CLOUDFLARED names it.

The hidden flags (--edge, --cacert, --quick-service) are tunnel-level: they go before --url.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import aiohttp
import pytest

from nbtunnel.edge.server import Edge
from tests.e2e.conftest import Origin

CLOUDFLARED = os.environ.get("NBTUNNEL_CLOUDFLARED")
pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not CLOUDFLARED, reason="set NBTUNNEL_CLOUDFLARED to a cloudflared binary"),
]


async def test_real_cloudflared_quick_tunnel_through_our_edge(
    edge: Edge, origin: Origin, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    assert CLOUDFLARED is not None
    host, port = edge.quic_address
    proc = await asyncio.create_subprocess_exec(
        CLOUDFLARED, "tunnel", "--no-autoupdate", "--no-prechecks",
        "--edge", f"{host}:{port}", "--cacert", str(edge.ca_path),
        "--quick-service", edge.api_url, "--metrics", "127.0.0.1:0",
        "--url", origin.url,
        env={**os.environ, "HOME": str(tmp_path)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    hostname = None
    log: list[str] = []
    try:
        async with asyncio.timeout(30):
            while True:
                line = (await proc.stdout.readline()).decode(errors="replace")
                assert line, "cloudflared exited:\n" + "".join(log)
                log.append(line)
                m = re.search(r"https://([a-z0-9.-]+)", line)
                if m and hostname is None and "trycloudflare" not in m.group(1):
                    hostname = m.group(1)
                if "Registered tunnel connection" in line:
                    break
        assert hostname is not None, "".join(log)
        hp = edge.public_address
        for i in range(20):
            async with client.post(f"http://{hp[0]}:{hp[1]}/echo/{i}?q={i}", data=b"body",
                                   headers={"Host": hostname}) as resp:
                assert resp.status == 200, await resp.text()
                doc = await resp.json()
                assert doc["method"] == "POST" and doc["body"] == "body"
                assert doc["query"] == f"q={i}"
        conns = edge.registry.connections()
        assert len(conns) == 1 and conns[0].client_version.startswith("20")
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 20)
