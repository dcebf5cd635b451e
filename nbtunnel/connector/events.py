"""Status events a connector emits for observers (logs, the notebook widget, tests).

Observers must not block: they are called on the connector's loop and should only record.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConnectionEvent:
    """A change in one HA connection: connecting, registered, reconnecting, draining, closed."""

    conn_index: int
    state: str
    edge: str = ""
    location: str = ""
    connection_id: str = ""
    detail: str = ""
    delay: float = 0.0


@dataclass(frozen=True)
class RequestEvent:
    """One proxied request finished (or failed)."""

    conn_index: int
    method: str
    path: str
    status: int
    duration: float
    bytes_in: int
    bytes_out: int
    error: str = ""


TunnelEvent = ConnectionEvent | RequestEvent
