"""The edge's registration side on the in-memory transport pair, for edge and connector tests.

A real store (SQLite in the test's directory) with one routed tunnel, a registry and the real
control handler serving every connection made with :meth:`MemoryEdge.connect`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from nbtunnel.edge.control import ControlHandler
from nbtunnel.edge.registry import LiveConnection, Registry
from nbtunnel.edge.stores.base import TunnelRecord
from nbtunnel.edge.stores.sqlite import SqliteStore
from nbtunnel.transport.memory import MemoryConnection, memory_pair

HOSTNAME = "app.example"


@dataclass
class MemoryEdge:
    store: SqliteStore
    registry: Registry
    control: ControlHandler
    tunnel: TunnelRecord
    changes: list[tuple[str, LiveConnection]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    ends: list[MemoryConnection] = field(default_factory=list)
    """The edge end of every connection made."""

    def connect(self, protocol: str = "quic") -> tuple[MemoryConnection, MemoryConnection]:
        """A new connection whose edge end the control handler serves."""
        edge_end, connector_end = memory_pair(protocol)
        self.ends.append(edge_end)
        self.tasks.append(asyncio.get_running_loop().create_task(self.control.serve(edge_end)))
        return edge_end, connector_end


@contextlib.asynccontextmanager
async def memory_edge(tmp_path: Path) -> AsyncIterator[MemoryEdge]:
    store = SqliteStore(tmp_path / "edge.sqlite3")
    tunnel = await store.create_tunnel("t", account_tag="acct")
    await store.add_route(HOSTNAME, tunnel.id)
    registry = Registry()
    changes: list[tuple[str, LiveConnection]] = []
    control = ControlHandler(store, registry, on_change=lambda what, live: changes.append(
        (what, live)))
    edge = MemoryEdge(store, registry, control, tunnel, changes)
    try:
        yield edge
    finally:
        for task in edge.tasks:
            task.cancel()
        await asyncio.gather(*edge.tasks, return_exceptions=True)
        await store.aclose()
