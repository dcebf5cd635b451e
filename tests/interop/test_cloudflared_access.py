"""Interop for TCP services with the real cloudflared; skipped unless NBTUNNEL_CLOUDFLARED names
the binary. Both directions of the pairing:

* `cloudflared access tcp` (the client) against our HTTPS front and our connector's `tcp://`
  rule; its hidden `--connect-to SNI:PORT:HOST` maps the hostname to 127.0.0.1;
* the cloudflared *connector* serving a `tcp://` rule, reached with nbtunnel's access client.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nbtunnel.access import connect
from nbtunnel.edge.server import Edge, EdgeConfig
from tests.access.conftest import EchoServer, StartTunnel, echo, start  # noqa: F401
from tests.interop.test_cloudflared import quick_cloudflared
from tests.scale.services import free_port

CLOUDFLARED = os.environ.get("NBTUNNEL_CLOUDFLARED")
pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not CLOUDFLARED, reason="set NBTUNNEL_CLOUDFLARED to a cloudflared binary"),
]


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    async with Edge(EdgeConfig(state_dir=tmp_path / "edge", quic_port=0, http_port=0,
                               https_port=0)) as e:
        yield e


async def _connect_when_listening(port: int, timeout: float = 20) -> tuple[
        asyncio.StreamReader, asyncio.StreamWriter]:
    async with asyncio.timeout(timeout):
        while True:
            try:
                return await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)


async def test_cloudflared_access_tcp_against_our_https_front(
        start: StartTunnel, echo: EchoServer, tmp_path: Path) -> None:  # noqa: F811
    assert CLOUDFLARED is not None
    t = await start(f"tcp://{echo.address}")
    https_host, https_port = t.edge.https_address  # type: ignore[misc]
    local = free_port()
    proc = await asyncio.create_subprocess_exec(
        CLOUDFLARED, "access", "tcp", "--hostname", t.hostname, "--url", f"127.0.0.1:{local}",
        "--connect-to", f"{t.hostname}:{https_port}:{https_host}",
        env={**os.environ, "HOME": str(tmp_path)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        reader, writer = await _connect_when_listening(local)
        payload = os.urandom(1 << 20)
        writer.write(payload)
        await writer.drain()
        got = await asyncio.wait_for(reader.readexactly(len(payload)), 30)
        assert got == payload
        writer.close()
    finally:
        proc.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 10)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("protocol", ["quic", "http2"])
async def test_cloudflared_connector_tcp_rule_with_our_access_client(
        edge: Edge, echo: EchoServer, tmp_path: Path, protocol: str) -> None:  # noqa: F811
    async with quick_cloudflared(edge, f"tcp://{echo.address}", tmp_path,
                                 ("--protocol", protocol)) as cf:
        https_host, https_port = edge.https_address  # type: ignore[misc]
        reader, writer = await connect(cf.hostname, edge_address=f"{https_host}:{https_port}",
                                       edge_ca=str(edge.ca_path))
        payload = os.urandom(1 << 20)
        writer.write(payload)
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(len(payload)), 30) == payload
        writer.close()
        assert re.search(r"Registered tunnel connection", "".join(cf.log))
