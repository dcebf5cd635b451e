"""Processes coming and going: the CLI, SIGKILL, edge restarts, graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from nbtunnel.connector.ingress import Ingress
from nbtunnel.connector.quick import request_quick_tunnel
from nbtunnel.connector.supervisor import Connector, ConnectorConfig
from nbtunnel.edge.server import Edge, EdgeConfig
from tests.e2e.conftest import FAST_HA_START, Origin, Tunnel, eventually

MB = 1024 * 1024


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _spawn(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nbtunnel", *args, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )


async def _read_until(proc: asyncio.subprocess.Process, pattern: str, timeout: float = 30) -> str:
    assert proc.stdout is not None
    seen = []
    async with asyncio.timeout(timeout):
        while True:
            line = (await proc.stdout.readline()).decode()
            if not line:
                raise AssertionError(f"process ended before printing {pattern!r}:\n"
                                     + "".join(seen))
            seen.append(line)
            m = re.search(pattern, line)
            if m:
                return m.group(1) if m.groups() else line


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
async def test_cli_quick_tunnel_to_hello_world_with_curl(tmp_path: Path) -> None:
    """The README's offline command: an embedded edge, a URL, and curl fetching it."""
    proc = await _spawn("tunnel", "--edge", "local", "--url", "hello_world", "--http-port", "0",
                        env={"NBTUNNEL_HOME": str(tmp_path)})
    try:
        url = await _read_until(proc, r"\|\s+(http://\S+)\s+\|")
        await _read_until(proc, r"(Registered tunnel connection connIndex=3)")
        curl = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--max-time", "10", url + "/", stdout=asyncio.subprocess.PIPE)
        out, _ = await curl.communicate()
        assert curl.returncode == 0
        assert b"nbtunnel hello world" in out.lower() or b"hello" in out.lower()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0


async def test_edge_survives_connector_sigkill_mid_transfer(
    edge: Edge, origin: Origin, tunnel: Tunnel, client: aiohttp.ClientSession, tmp_path: Path
) -> None:
    quic_host, quic_port = edge.quic_address
    proc = await _spawn(
        "tunnel", "--edge", f"{quic_host}:{quic_port}", "--cacert", str(edge.ca_path),
        "--quick-service", edge.api_url, "--url", origin.url, "--ha-connections", "2",
        env={"NBTUNNEL_HOME": str(tmp_path)},
    )
    try:
        hostname = (await _read_until(proc, r"\|\s+http://([^:/\s]+)\S*\s+\|"))
        await _read_until(proc, r"(Registered tunnel connection connIndex=1)")
        base = tunnel.base
        got = 0
        with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError,
                            aiohttp.ClientConnectionError)):
            async with client.get(f"{base}/download/{200 * MB}",
                                  headers={"Host": hostname}) as resp:
                assert resp.status == 200
                async for chunk in resp.content.iter_chunked(MB):
                    got += len(chunk)
                    if got >= 5 * MB and proc.returncode is None:
                        proc.kill()
        assert 5 * MB <= got < 200 * MB
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    # the edge keeps serving the other tunnel, and answers 530 for the dead one soon after
    async with client.get(f"{tunnel.base}/echo/x", headers={"Host": tunnel.hostname}) as resp:
        assert resp.status == 200


async def test_connector_reconnects_after_edge_restart(
    tmp_path: Path, origin: Origin, client: aiohttp.ClientSession
) -> None:
    config = EdgeConfig(state_dir=tmp_path / "edge", quic_port=_free_port(socket.SOCK_DGRAM),
                        http_port=_free_port())
    edge = Edge(config)
    await edge.start()
    quick = await request_quick_tunnel(edge.api_url)
    connector = Connector(ConnectorConfig(
        edge=[edge.quic_address], credentials=quick.credentials,
        ingress=Ingress.single(origin.url), cacert=str(edge.ca_path), ha_connections=2,
        ha_start_delay=FAST_HA_START))
    task = asyncio.get_running_loop().create_task(connector.run())
    try:
        await asyncio.wait_for(connector.wait_ready(2), 20)
        await edge.close()
        edge = Edge(config)  # same state dir and ports: tunnels and routes survive
        await edge.start()
        restarted = edge
        await eventually(lambda: len(restarted.registry.connections()) == 2, timeout=60)
        host, port = edge.public_address
        async with client.get(f"http://{host}:{port}/echo/back",
                              headers={"Host": quick.hostname}) as resp:
            assert resp.status == 200
    finally:
        await connector.shutdown(grace=1)
        await asyncio.wait_for(task, 10)
        await edge.close()


async def test_graceful_shutdown_finishes_in_flight_sse(
    tunnel: Tunnel, origin: Origin, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{tunnel.base}/sse", headers={"Host": tunnel.hostname}) as resp:
        assert await resp.content.readuntil(b"\n\n") == b"data: first\n\n"
        shutdown = asyncio.get_running_loop().create_task(tunnel.connector.shutdown(grace=10))
        live = tunnel.edge.registry.connections()
        await eventually(lambda: all(c.draining for c in live))  # the edge saw unregister
        origin.sse_release.set()
        assert await resp.content.read() == b"data: second\n\n"
    await asyncio.wait_for(shutdown, 15)
    async with client.get(f"{tunnel.base}/echo/late", headers={"Host": tunnel.hostname}) as r:
        assert r.status == 530
