"""Live state shared by the edges of one deployment: who holds which tunnel's connections.

The store (`stores/`) holds what an operator configured; presence holds what is true right
now and dies with the edge that reported it. A single edge needs none of it (`LocalPresence`);
several edges use Redis (`--presence redis://...`, `presence_redis.py`):

- which edge holds which connection of which tunnel (entries refreshed while the connection
  lives, removed on unregister, expiring by themselves when an edge dies);
- configuration pushes and connection closes fanned out to the edges holding a tunnel;
- quick-tunnel hostnames reserved across edges.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nbtunnel.edge.registry import LiveConnection

PushLocal = Callable[[uuid.UUID, int, bytes], Awaitable[list[dict[str, Any]]]]
CloseLocal = Callable[[uuid.UUID, str | None, str], int]


P = "nbt:"
"""The prefix of every Redis key and channel of a deployment."""


@dataclass(frozen=True)
class EdgeInfo:
    """One live edge as the others see it."""

    id: str
    location: str
    peer: tuple[str, int] | None  # where other edges forward requests (peering.py)
    front: tuple[str, int] | None
    pid: int = 0
    started_at: float = 0.0
    connections: int = 0
    tunnels: int = 0
    draining: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "location": self.location,
                "peer": list(self.peer) if self.peer else None,
                "front": list(self.front) if self.front else None, "pid": self.pid,
                "started_at": self.started_at, "connections": self.connections,
                "tunnels": self.tunnels, "draining": self.draining}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> EdgeInfo:
        peer, front = doc.get("peer"), doc.get("front")
        return cls(str(doc["id"]), str(doc.get("location", "")),
                   (str(peer[0]), int(peer[1])) if peer else None,
                   (str(front[0]), int(front[1])) if front else None,
                   int(doc.get("pid", 0)), float(doc.get("started_at", 0.0)),
                   int(doc.get("connections", 0)), int(doc.get("tunnels", 0)),
                   bool(doc.get("draining", False)))


class Presence:
    """What an edge tells the others and asks them (see module docstring); this base is the
    single edge's answer to everything: nothing shared."""

    edge_id: str = ""
    location: str = ""
    shared: bool = False
    """True when other edges exist to share with (Redis)."""

    def bind(self, push_local: PushLocal, close_local: CloseLocal) -> None:
        """What to run when another edge asks this one to push or close (wired by Edge)."""
        self._push_local = push_local
        self._close_local = close_local

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    def connection_changed(self, state: str, live: LiveConnection) -> None:
        """ControlHandler hook: registered / draining / closed."""

    async def announce(self) -> None:
        """Publish this edge's addresses now (once its listeners are up)."""

    async def drain(self) -> None:
        """This edge is shutting down: tell the others at once to stop forwarding to it."""

    async def edges_for(self, tunnel_id: uuid.UUID) -> list[EdgeInfo]:
        """Other live edges holding a usable connection of the tunnel (cached briefly)."""
        return []

    def cached_edges_for(self, tunnel_id: uuid.UUID) -> list[EdgeInfo]:
        return []

    async def heard_from(self, edge_id: str) -> float | None:
        """Seconds since the edge last refreshed its presence (None: gone)."""
        return None

    def forget_edge(self, edge_id: str) -> None:
        """A forward to this edge failed: skip it until presence says it is back."""

    async def edges(self) -> list[EdgeInfo]:
        return []

    async def remote_connections(self, tunnel_id: uuid.UUID) -> list[dict[str, Any]]:
        """Connections of the tunnel held by other edges, as `LiveConnection.describe()`."""
        return []

    async def reserve_hostname(self, hostname: str) -> bool:
        """Claim a quick-tunnel hostname across edges; False when another edge has it."""
        return True

    async def push_remote(self, tunnel_id: uuid.UUID, version: int,
                          config: bytes) -> list[dict[str, Any]]:
        """Ask every other edge holding the tunnel to push; their `PushResult.describe()`s."""
        return []

    async def close_remote(self, tunnel_id: uuid.UUID, connector_id: str | None,
                           why: str) -> int:
        """Ask other edges to close the tunnel's connections; how many they closed."""
        return 0


class LocalPresence(Presence):
    """A single edge: nothing to share."""

    def __init__(self, edge_id: str, location: str) -> None:
        self.edge_id = edge_id
        self.location = location

