"""Live connector connections, by tunnel, and the choice of one for each request.

Pure bookkeeping (no I/O): the control handler adds a connection once `registerConnection`
succeeds and removes it when the connection ends (either transport); the public front asks
`pick()` for a connection of a tunnel: the registered, non-draining one (of any replica) with
the fewest requests in flight, the earliest registered among equals. At low concurrency every
request so reuses one warm connection (its ACKs ride on the next request's packets instead of
going out alone, one delayed-ACK packet per request per idle connection), and under load the
requests spread over every connection. It also remembers when a tunnel lost its last
connection (`idle_since`), for the expiry of idle quick tunnels.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from nbtunnel.edge.clock import Clock
from nbtunnel.transport.base import TunnelConnection

STALE_AFTER = 1.5  # seconds without a packet from the connector (it pings every 1 s)


@dataclass(eq=False)
class LiveConnection:
    """One registered connector connection (one HA connection of one replica)."""

    tunnel_id: uuid.UUID
    conn_index: int
    connector_id: uuid.UUID
    connection_id: uuid.UUID
    protocol: str
    edge_location: str
    origin_ip: str
    client_version: str
    client_arch: str
    features: list[str]
    opened_at: float
    transport: TunnelConnection
    draining: bool = False
    in_flight: int = 0
    served: int = 0
    local_config: bytes | None = None

    def describe(self) -> dict[str, object]:
        """JSON-ready view, in the shape `tunnel info` shows."""
        return {
            "id": str(self.connection_id),
            "connector_id": str(self.connector_id),
            "conn_index": self.conn_index,
            "colo_name": self.edge_location,
            "protocol": self.protocol,
            "origin_ip": self.origin_ip,
            "opened_at": self.opened_at,
            "client_version": self.client_version,
            "arch": self.client_arch,
            "draining": self.draining,
            "in_flight": self.in_flight,
        }


class Registry:
    """Tunnel id → live connections; picks the least busy usable one (module docstring)."""

    def __init__(self, clock: Clock | None = None) -> None:
        # keyed by the id's int: a UUID's __hash__ and __eq__ are Python calls (per request)
        self._by_tunnel: dict[int, list[LiveConnection]] = {}
        self._clock = clock or Clock()
        self._idle_since: dict[uuid.UUID, float] = {}

    def add(self, conn: LiveConnection) -> None:
        self._by_tunnel.setdefault(conn.tunnel_id.int, []).append(conn)
        self._idle_since.pop(conn.tunnel_id, None)

    def remove(self, conn: LiveConnection) -> None:
        conns = self._by_tunnel.get(conn.tunnel_id.int)
        if conns and conn in conns:
            conns.remove(conn)
            if not conns:
                del self._by_tunnel[conn.tunnel_id.int]
                self._idle_since[conn.tunnel_id] = self._clock.time()

    def idle_since(self, tunnel_id: uuid.UUID) -> float | None:
        """When the tunnel's last connection went away (None: connected, or never seen)."""
        return self._idle_since.get(tunnel_id)

    def forget(self, tunnel_id: uuid.UUID) -> None:
        """Drop what is remembered about a deleted tunnel."""
        self._idle_since.pop(tunnel_id, None)

    def connections(self, tunnel_id: uuid.UUID | None = None) -> list[LiveConnection]:
        if tunnel_id is None:
            return [c for conns in self._by_tunnel.values() for c in conns]
        return list(self._by_tunnel.get(tunnel_id.int, ()))

    def pick(
        self, tunnel_id: uuid.UUID, exclude: LiveConnection | None = None
    ) -> LiveConnection | None:
        """The usable connection with the fewest requests in flight (the earliest registered
        among equals), or None when the tunnel has no live one (→ 530).

        A connector pings every second, so a connection silent for longer than
        `STALE_AFTER` is probably dead (a SIGKILLed replica): skip it while any other
        connection is fresh, rather than wait for the QUIC idle timeout.
        """
        conns = self._by_tunnel.get(tunnel_id.int)
        if not conns:
            return None
        best: LiveConnection | None = None
        stale: LiveConnection | None = None
        for conn in conns:
            transport = conn.transport
            if conn.draining or transport.closed or conn is exclude:
                continue
            if transport.silent_for > STALE_AFTER:
                stale = stale or conn
                continue
            if best is None or conn.in_flight < best.in_flight:
                best = conn
                if not conn.in_flight:
                    break  # idle: nothing later can beat it
        return best or stale

    def is_connected(self, tunnel_id: uuid.UUID) -> bool:
        return self.pick(tunnel_id) is not None
