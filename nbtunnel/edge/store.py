"""Embedded SQLite store for tunnels and routes.

The edge keeps its control-plane state in one SQLite file in its state directory, so a restart
keeps every tunnel and hostname. Lookups on the request path never touch SQLite: routes are
mirrored in a dict (routing must not slow down as the table grows). A later control-plane issue
extends this interface (accounts, tokens, configurations); keep callers on these methods.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from nbtunnel.core.errors import NbtunnelError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tunnels (
    id TEXT PRIMARY KEY,
    account_tag TEXT NOT NULL,
    secret BLOB NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at REAL NOT NULL,
    deleted_at REAL
);
CREATE TABLE IF NOT EXISTS routes (
    hostname TEXT PRIMARY KEY,
    tunnel_id TEXT NOT NULL REFERENCES tunnels(id),
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS routes_by_tunnel ON routes(tunnel_id);
PRAGMA user_version = 1;
"""


class StoreError(NbtunnelError):
    """A store operation was refused (duplicate hostname, unknown tunnel)."""


@dataclass(frozen=True)
class TunnelRecord:
    """One tunnel: its identity and the secret a connector proves it holds."""

    id: uuid.UUID
    account_tag: str
    secret: bytes
    name: str
    kind: str  # "quick" or "named"
    created_at: float


class Store:
    """Tunnels and routes in SQLite, with an in-memory route and tunnel cache."""

    def __init__(self, path: Path | str = ":memory:") -> None:
        if isinstance(path, Path):
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._tunnels: dict[uuid.UUID, TunnelRecord] = {}
        self._routes: dict[str, uuid.UUID] = {}
        for row in self._db.execute(
            "SELECT id, account_tag, secret, name, kind, created_at FROM tunnels"
            " WHERE deleted_at IS NULL"
        ):
            rec = TunnelRecord(uuid.UUID(row[0]), row[1], bytes(row[2]), row[3], row[4], row[5])
            self._tunnels[rec.id] = rec
        for host, tid in self._db.execute("SELECT hostname, tunnel_id FROM routes"):
            self._routes[host] = uuid.UUID(tid)

    def close(self) -> None:
        self._db.close()

    def create_tunnel(
        self,
        name: str,
        *,
        account_tag: str,
        kind: str = "named",
        secret: bytes | None = None,
        tunnel_id: uuid.UUID | None = None,
    ) -> TunnelRecord:
        """Create a tunnel with a fresh UUID and a 32-byte random secret."""
        rec = TunnelRecord(
            id=tunnel_id or uuid.uuid4(),
            account_tag=account_tag,
            secret=secret if secret is not None else secrets.token_bytes(32),
            name=name,
            kind=kind,
            created_at=time.time(),
        )
        with self._lock, self._db:
            self._db.execute(
                "INSERT INTO tunnels (id, account_tag, secret, name, kind, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (str(rec.id), rec.account_tag, rec.secret, rec.name, rec.kind, rec.created_at),
            )
            self._tunnels[rec.id] = rec
        return rec

    def get_tunnel(self, tunnel_id: uuid.UUID) -> TunnelRecord | None:
        return self._tunnels.get(tunnel_id)

    def tunnels(self) -> list[TunnelRecord]:
        return list(self._tunnels.values())

    def add_route(self, hostname: str, tunnel_id: uuid.UUID) -> None:
        """Bind a public hostname to a tunnel; a hostname belongs to exactly one tunnel."""
        hostname = hostname.lower()
        if tunnel_id not in self._tunnels:
            raise StoreError(f"unknown tunnel {tunnel_id}")
        with self._lock:
            owner = self._routes.get(hostname)
            if owner is not None and owner != tunnel_id:
                raise StoreError(f"hostname {hostname} is already routed to tunnel {owner}")
            with self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO routes (hostname, tunnel_id, created_at)"
                    " VALUES (?, ?, ?)",
                    (hostname, str(tunnel_id), time.time()),
                )
            self._routes[hostname] = tunnel_id

    def resolve(self, hostname: str) -> uuid.UUID | None:
        """Tunnel id for a public hostname (no port, any case); O(1), no I/O."""
        return self._routes.get(hostname.lower())

    def hostnames(self, tunnel_id: uuid.UUID) -> list[str]:
        return sorted(h for h, t in self._routes.items() if t == tunnel_id)

    def hostname_taken(self, hostname: str) -> bool:
        return hostname.lower() in self._routes
