"""Fixtures for TCP services through a tunnel: an echo origin, an edge whose HTTP/2 listener
shares the QUIC port number, and tunnels serving a stream rule over QUIC or HTTP/2."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from nbtunnel.connector.ingress import Ingress
from nbtunnel.connector.quick import request_quick_tunnel
from nbtunnel.connector.supervisor import Connector, ConnectorConfig
from nbtunnel.edge.server import Edge, EdgeConfig
from tests.e2e.conftest import FAST_HA_START, Tunnel, origin, stop_tunnel  # noqa: F401


@dataclass
class EchoServer:
    """Echoes every chunk; on the client's EOF it writes `tail` and closes (half-close test)."""

    port: int
    tail: bytes
    connections: list[str]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    state = EchoServer(0, b"<eof seen>", [])
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        state.connections.append("open")
        index = len(state.connections) - 1
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write(state.tail)
            await writer.drain()
            state.connections[index] = "eof"
        except ConnectionError:
            state.connections[index] = "reset"
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    """An edge on ephemeral ports (its HTTP/2 connector listener shares the QUIC port)."""
    async with Edge(EdgeConfig(state_dir=tmp_path / "edge", quic_port=0, http_port=0,
                               https_port=0)) as e:
        yield e


StartTunnel = Callable[..., Awaitable[Tunnel]]


@pytest.fixture
async def start(edge: Edge) -> AsyncIterator[StartTunnel]:
    """start(ingress_or_service, protocol="quic") -> a registered tunnel, stopped at teardown."""
    started: list[Tunnel] = []

    async def go(service: str | Ingress, protocol: str = "quic", ha: int = 1) -> Tunnel:
        quick = await request_quick_tunnel(edge.api_url)
        ingress = Ingress.single(service) if isinstance(service, str) else service
        connector = Connector(ConnectorConfig(
            edge=[edge.quic_address], credentials=quick.credentials, ingress=ingress,
            cacert=str(edge.ca_path), ha_connections=ha, grace_period=2, protocol=protocol,
            ha_start_delay=FAST_HA_START))
        task = asyncio.get_running_loop().create_task(connector.run())
        await asyncio.wait_for(connector.wait_ready(ha), 30)
        t = Tunnel(edge, connector, quick, task)
        started.append(t)
        return t

    try:
        yield go
    finally:
        for t in started:
            await stop_tunnel(t)
