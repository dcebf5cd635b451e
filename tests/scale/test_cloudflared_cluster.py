"""The real cloudflared given two edges of one deployment keeps serving when one is killed
(visitors come in through a third edge, which forwards to whichever edge holds a connection)."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import aiohttp
import pytest

from nbtunnel.edge.bootstrap import ensure_admin_token
from nbtunnel.edge.server import Edge
from tests.control.conftest import Api
from tests.e2e.conftest import Origin
from tests.scale.cluster import share_ca, wait_held
from tests.scale.procs import start_edge_proc, stop

CLOUDFLARED = os.environ.get("NBTUNNEL_CLOUDFLARED")
pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not CLOUDFLARED, reason="set NBTUNNEL_CLOUDFLARED to a cloudflared binary"),
]
HOST = "cf.example.com"


async def test_cloudflared_with_two_edges_survives_one(
        edge_c: Edge, tmp_path: Path, pg_url: str, redis_url: str, origin: Origin) -> None:
    assert CLOUDFLARED is not None and edge_c.store is not None
    path, token = await ensure_admin_token(edge_c.store, edge_c.config.state_dir)
    async with aiohttp.ClientSession() as s:
        api = Api(s, edge_c.api_url, token or path.read_text().strip())
        t = await api.ok("POST", "/tunnels", {"name": "cf"})
        await api.ok("POST", "/routes", {"hostname": HOST, "tunnel_id": t["id"]})
    procs = {}
    for name in ("a", "b"):
        state = tmp_path / f"edge-{name}"
        share_ca(edge_c.config.state_dir, state)
        procs[name] = await start_edge_proc(name, state, pg_url, redis_url)
    a, b = procs["a"], procs["b"]
    config = tmp_path / "config.yml"
    config.write_text(
        f"edge: [{a.quic[0]}:{a.quic[1]}, {b.quic[0]}:{b.quic[1]}]\ncacert: {edge_c.ca_path}\n"
        f"protocol: quic\nno-autoupdate: true\nno-prechecks: true\nmetrics: 127.0.0.1:0\n"
        f"ha-connections: 2\ngrace-period: 2s\ningress:\n  - service: {origin.url}\n")
    cloudflared = await asyncio.create_subprocess_exec(
        CLOUDFLARED, "tunnel", "--config", str(config), "run", "--token", t["token"],
        env={**os.environ, "HOME": str(tmp_path)}, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        tid = uuid.UUID(t["id"])
        for name in ("a", "b"):  # one connection on each edge
            await wait_held(edge_c, tid, name, timeout=30)
        front = "http://{}:{}".format(*edge_c.public_address)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s:
            async def get(i: int) -> int:
                async with s.get(f"{front}/echo/{i}", headers={"Host": HOST}) as resp:
                    await resp.read()
                    return resp.status

            assert [await get(i) for i in range(10)] == [200] * 10
            a.proc.send_signal(signal.SIGKILL)
            await a.proc.wait()
            # after the kill every request is served through B (C stops forwarding to A
            # within a few seconds; idempotent requests waiting on A are retried on B)
            statuses = [await get(i) for i in range(30)]
            assert statuses.count(200) >= 28, statuses
            assert statuses[-10:] == [200] * 10, statuses
    finally:
        await stop(cloudflared)
        for proc in procs.values():
            await stop(proc.proc)
