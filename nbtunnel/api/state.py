"""What a tunnel looks like from outside: per-connection state, counters, recent requests.

Kept apart from `tunnel.py` so the widget and the text status read plain immutable snapshots
(built on the loop thread, read on any thread) instead of live connector objects.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

from nbtunnel.connector.events import ConnectionEvent, RequestEvent, TunnelEvent

RECENT = 20


@dataclass(frozen=True)
class ConnectionInfo:
    """One HA connection: connecting, registered, reconnecting, draining or closed."""

    index: int
    state: str = "connecting"
    location: str = ""
    protocol: str = "quic"
    edge: str = ""
    connection_id: str = ""
    detail: str = ""


@dataclass(frozen=True)
class TunnelStats:
    requests: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    errors: int = 0
    open_streams: int = 0


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    status: int
    duration: float
    error: str = ""


class TunnelState:
    """Folds connector events into counters; mutated on the loop thread only."""

    def __init__(self, ha_connections: int, protocol: str) -> None:
        self.protocol = protocol
        self.connections = {i: ConnectionInfo(i, protocol=protocol)
                            for i in range(ha_connections)}
        self.stats = TunnelStats()
        self.recent: deque[RequestRecord] = deque(maxlen=RECENT)
        self.stopped = False
        self.version = 0  # bumped on every change; lets watchers skip no-op refreshes

    def apply(self, event: TunnelEvent) -> None:
        self.version += 1
        if isinstance(event, ConnectionEvent):
            old = self.connections.get(event.conn_index, ConnectionInfo(event.conn_index))
            info = replace(old, state=event.state, edge=event.edge or old.edge,
                           detail=event.detail, protocol=self.protocol)
            if event.state == "registered":
                info = replace(info, location=event.location,
                               connection_id=event.connection_id, detail="")
            self.connections[event.conn_index] = info
        elif isinstance(event, RequestEvent):
            s = self.stats
            self.stats = replace(s, requests=s.requests + 1, bytes_in=s.bytes_in + event.bytes_in,
                                 bytes_out=s.bytes_out + event.bytes_out,
                                 errors=s.errors + (1 if event.error or event.status >= 500
                                                    else 0))
            self.recent.append(RequestRecord(event.method, event.path, event.status,
                                             event.duration, event.error))

    def mark_stopped(self) -> None:
        self.version += 1
        self.stopped = True
        self.connections = {i: replace(c, state="closed")
                            for i, c in self.connections.items()}

    @property
    def status(self) -> str:
        if self.stopped:
            return "stopped"
        states = [c.state for c in self.connections.values()]
        if "registered" in states:
            return "connected"
        if "reconnecting" in states:
            return "reconnecting"
        return "connecting"


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover
