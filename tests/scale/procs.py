"""Edges and connectors as real processes (`python -m nbtunnel ...`) for the failover tests."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.scale.services import free_port


@dataclass
class EdgeProc:
    name: str
    proc: asyncio.subprocess.Process
    quic: tuple[str, int]
    http: tuple[str, int]

    @property
    def front(self) -> str:
        return f"http://{self.http[0]}:{self.http[1]}"


async def start_edge_proc(name: str, state: Path, pg_url: str, redis_url: str,
                          *extra: str) -> EdgeProc:
    quic, http = ("127.0.0.1", free_port()), ("127.0.0.1", free_port())
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nbtunnel", "--loglevel", "warn", "edge",
        "--listen", f"{quic[0]}:{quic[1]}", "--http", f"{http[0]}:{http[1]}",
        "--state-dir", str(state), "--store", pg_url, "--presence", redis_url,
        "--edge-id", name, "--location", name.upper() * 3, "--quick-tunnel-rate", "0",
        *extra, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL)
    edge = EdgeProc(name, proc, quic, http)
    await wait_api(edge.front, proc)
    return edge


async def wait_api(base: str, proc: asyncio.subprocess.Process, timeout: float = 30) -> None:
    """Until the edge answers its API (it prints nothing we need)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            assert proc.returncode is None, f"the edge exited with {proc.returncode}"
            try:
                async with s.get(base + "/", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            assert time.monotonic() < deadline, "the edge did not start"
            await asyncio.sleep(0.1)


async def start_connector_proc(token: str, edges: list[tuple[str, int]], cacert: Path,
                               service: str, home: Path, ha: int) -> asyncio.subprocess.Process:
    env = {**os.environ, "NBTUNNEL_HOME": str(home), "HOME": str(home)}
    args = [a for e in edges for a in ("--edge", f"{e[0]}:{e[1]}")]
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nbtunnel", "--loglevel", "warn", "tunnel", "run",
        "--token", token, *args, "--cacert", str(cacert), "--url", service,
        "--ha-connections", str(ha), "--grace-period", "5s",
        env=env, stdin=asyncio.subprocess.DEVNULL)


async def stop(proc: asyncio.subprocess.Process, timeout: float = 30) -> int:
    if proc.returncode is None:
        proc.terminate()
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        return await proc.wait()
