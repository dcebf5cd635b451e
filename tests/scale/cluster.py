"""Helpers for tests with several edges on one PostgreSQL and one Redis (in this process)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from nbtunnel.connector.ingress import Ingress
from nbtunnel.connector.supervisor import Connector, ConnectorConfig
from nbtunnel.core.credentials import Credentials
from nbtunnel.edge.server import Edge, EdgeConfig
from nbtunnel.transport.tls import LocalCA


def share_ca(first: Path, other: Path) -> None:
    """Every edge of a deployment has the same CA (connectors and peers verify with it)."""
    other.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = LocalCA(first)
    shutil.copy2(ca.ca_path, other / ca.ca_path.name)
    shutil.copy2(ca.ca_key_path, other / ca.ca_key_path.name)


def edge_config(state: Path, pg_url: str, redis_url: str, name: str) -> EdgeConfig:
    return EdgeConfig(state_dir=state, quic_port=0, http_port=0, store=pg_url,
                      presence=redis_url, location=name.upper() * 3, edge_id=name,
                      quick_tunnels_per_minute=0, metrics=("127.0.0.1", 0))


@contextlib.asynccontextmanager
async def edges(tmp_path: Path, pg_url: str, redis_url: str,
                names: tuple[str, ...] = ("a", "b", "c")) -> AsyncIterator[dict[str, Edge]]:
    """Edges named `names` (locations AAA, BBB, ...) sharing one CA, store and presence."""
    async with contextlib.AsyncExitStack() as stack:
        started: dict[str, Edge] = {}
        for name in names:
            state = tmp_path / f"edge-{name}"
            if started:
                share_ca(tmp_path / f"edge-{names[0]}", state)
            started[name] = await stack.enter_async_context(
                Edge(edge_config(state, pg_url, redis_url, name)))
        yield started


async def wait_held(edge: Edge, tunnel_id: uuid.UUID, holder: str, timeout: float = 10) -> None:
    """Until `edge` sees (through presence) that edge `holder` holds the tunnel."""
    async with asyncio.timeout(timeout):
        while holder not in [e.id for e in await edge.cluster.presence.edges_for(tunnel_id)]:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def wait_unheld(edge: Edge, tunnel_id: uuid.UUID, timeout: float = 10) -> None:
    """Until `edge` sees no other edge holding the tunnel."""
    async with asyncio.timeout(timeout):
        while await edge.cluster.presence.edges_for(tunnel_id):  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def wait_routed(edge: Edge, hostname: str, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while edge.store is None or edge.store.resolve(hostname) is None:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def run_connector(edge_addresses: list[tuple[str, int]], creds: Credentials, service: str,
                        cacert: Path, ha: int = 2, protocol: str = "quic",
                        ) -> tuple[Connector, asyncio.Task[None]]:
    connector = Connector(ConnectorConfig(
        edge=edge_addresses, credentials=creds, ingress=Ingress.single(service),
        cacert=str(cacert), ha_connections=ha, grace_period=5, protocol=protocol))
    task = asyncio.get_running_loop().create_task(connector.run())
    await asyncio.wait_for(connector.wait_ready(ha), 20)
    return connector, task


async def stop_connector(connector: Connector, task: asyncio.Task[None]) -> None:
    await connector.shutdown(grace=2)
    await asyncio.wait_for(task, 10)
