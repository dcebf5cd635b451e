"""Replicas of one named tunnel as separate processes: load sharing, SIGTERM drains without
failing a request, SIGKILL fails at most what was in flight; SSE survives a graceful stop."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import aiohttp

from nbtunnel.edge.server import Edge
from tests.control.conftest import Api
from tests.e2e.conftest import Origin

RATE = 150  # requests per second
HOST = "replicas.example.com"


async def _replica(edge: Edge, token: str, origin: Origin, home: Path,
                   ha: int = 4) -> asyncio.subprocess.Process:
    host, port = edge.quic_address
    env = {**os.environ, "NBTUNNEL_HOME": str(home), "HOME": str(home)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nbtunnel", "--loglevel", "warn", "tunnel", "run",
        "--token", token, "--edge", f"{host}:{port}", "--cacert", str(edge.ca_path),
        "--url", origin.url, "--ha-connections", str(ha), "--grace-period", "5s",
        env=env, stdin=asyncio.subprocess.DEVNULL)


async def _wait_connections(edge: Edge, tid: str, n: int, timeout: float = 30) -> None:
    import uuid

    def live() -> int:
        return len([c for c in edge.registry.connections(uuid.UUID(tid)) if not c.draining])

    async with asyncio.timeout(timeout):
        while live() < n:  # noqa: ASYNC110 - polling the registry
            await asyncio.sleep(0.05)


async def _load(url: str, seconds: float, action_at: float,
                action: object) -> tuple[int, list[tuple[float, float, str]]]:
    """Fixed-rate GETs; returns (requests, failures as (start, end, why) relative to the
    action time)."""
    failures: list[tuple[float, float, str]] = []
    t0 = time.monotonic()
    acted = 0.0

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s:
        async def one() -> None:
            start = time.monotonic()
            try:
                async with s.get(url, headers={"Host": HOST}) as resp:
                    await resp.read()
                    if resp.status != 200:
                        failures.append((start, time.monotonic(), f"HTTP {resp.status}"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures.append((start, time.monotonic(), type(exc).__name__))

        n = int(seconds * RATE)
        async with asyncio.TaskGroup() as tg:
            for i in range(n):
                due = t0 + i / RATE
                if not acted and due - t0 >= action_at:
                    acted = time.monotonic()
                    action()  # type: ignore[operator]
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tg.create_task(one())
    return n, [(a - acted, b - acted, why) for a, b, why in failures]


async def test_two_replicas_sigterm_and_sigkill(cp_edge: Edge, api: Api, origin: Origin,
                                                tmp_path: Path) -> None:
    t = await api.ok("POST", "/tunnels", {"name": "replicas"})
    await api.ok("POST", "/routes", {"hostname": HOST, "tunnel_id": t["id"]})
    host, port = cp_edge.public_address
    url = f"http://{host}:{port}/echo/load"
    procs = [await _replica(cp_edge, t["token"], origin, tmp_path / f"r{i}") for i in range(2)]
    try:
        await _wait_connections(cp_edge, t["id"], 8)
        connectors = {c.connector_id for c in cp_edge.registry.connections(
            __import__("uuid").UUID(t["id"]))}
        assert len(connectors) == 2
        n, failed = await _load(url, 6, 2.0, lambda: procs[0].send_signal(signal.SIGTERM))
        print(f"\nSIGTERM: {n} requests at {RATE}/s, {len(failed)} failed: {failed[:5]}")
        assert failed == []
        assert await asyncio.wait_for(procs[0].wait(), 10) == 0
        procs[0] = await _replica(cp_edge, t["token"], origin, tmp_path / "r2")
        await _wait_connections(cp_edge, t["id"], 8)
        n, failed = await _load(url, 6, 2.0, lambda: procs[0].send_signal(signal.SIGKILL))
        late = [f for f in failed if f[0] > 3.0]  # started well after the kill
        print(f"SIGKILL: {n} requests at {RATE}/s, {len(failed)} failed "
              f"(started -0.x..+3 s around the kill: {len(failed) - len(late)}, "
              f"later: {len(late)}; last failing one started at "
              f"{max((f[0] for f in failed), default=0):+.2f} s): {failed[:3]}")
        assert late == []
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()


async def test_sse_completes_within_grace_on_sigterm(cp_edge: Edge, api: Api, origin: Origin,
                                                     tmp_path: Path) -> None:
    t = await api.ok("POST", "/tunnels", {"name": "sse"})
    await api.ok("POST", "/routes", {"hostname": HOST, "tunnel_id": t["id"]})
    proc = await _replica(cp_edge, t["token"], origin, tmp_path / "r", ha=2)
    host, port = cp_edge.public_address
    try:
        await _wait_connections(cp_edge, t["id"], 2)
        async with aiohttp.ClientSession() as s, s.get(
                f"http://{host}:{port}/sse", headers={"Host": HOST}) as resp:
            assert resp.status == 200
            assert (await resp.content.readline()).strip() == b"data: first"
            stopped = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(1.0)
            assert proc.returncode is None  # still draining the stream
            origin.sse_release.set()
            rest = await resp.content.read()
        assert b"data: second" in rest
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        assert time.monotonic() - stopped < 5 + 2  # within the grace period
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
