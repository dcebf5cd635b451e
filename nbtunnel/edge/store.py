"""Embedded SQLite store for tunnels and routes.

The edge keeps its control-plane state in one SQLite file in its state directory, so a restart
keeps every tunnel and hostname. Lookups on the request path never touch SQLite: routes are
mirrored in a dict (routing must not slow down as the table grows). The control plane adds
accounts, API tokens (only their SHA-256 is kept), soft-deleted tunnels and versioned
configurations; every multi-statement change runs in one `BEGIN IMMEDIATE` transaction, so
concurrent API requests (or a second process such as `nbtunnel edge token create`) lose nothing.

The file holds every tunnel secret: it is created 0600 (SQLite gives its `-wal` and `-shm`
files the database file's mode) and a file found readable by others is narrowed on open.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbtunnel.core.errors import NbtunnelError
from nbtunnel.edge.clock import Clock
from nbtunnel.edge.migrations import migrate
from nbtunnel.edge.state_files import private_database

TOKEN_PREFIX = "nbt_"

log = logging.getLogger("nbtunnel.edge.store")


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
    deleted_at: float | None = None


@dataclass(frozen=True)
class AccountRecord:
    """An account: owns tunnels, routes and API tokens."""

    tag: str
    name: str
    created_at: float


@dataclass(frozen=True)
class RouteRecord:
    hostname: str
    tunnel_id: uuid.UUID
    created_at: float


@dataclass(frozen=True)
class ConfigRecord:
    """One version of a tunnel's remote configuration (status: pending/applied/rejected)."""

    tunnel_id: uuid.UUID
    version: int
    config: dict[str, object]
    status: str
    detail: str
    created_at: float


def _tunnel(row: Any) -> TunnelRecord:
    return TunnelRecord(uuid.UUID(row[0]), row[1], bytes(row[2]), row[3], row[4], row[5], row[6])


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Store:
    """Tunnels and routes in SQLite, with an in-memory route and tunnel cache."""

    def __init__(self, path: Path | str = ":memory:", *, clock: Clock | None = None) -> None:
        self._clock = clock or Clock()  # timestamps; tests inject theirs
        if str(path) != ":memory:":
            private_database(Path(path))
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self.schema_version = migrate(self._db)
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

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (also serialises threads of this process)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

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
            created_at=self._clock.time(),
        )
        with self._tx() as db:
            if kind == "named" and db.execute(
                "SELECT 1 FROM tunnels WHERE account_tag = ? AND name = ? AND kind = 'named'"
                " AND deleted_at IS NULL", (account_tag, name)
            ).fetchone():
                raise StoreError(f"a tunnel named {name!r} already exists")
            db.execute(
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
        with self._tx() as db:
            owner = self._routes.get(hostname)
            if owner is not None and owner != tunnel_id:
                raise StoreError(f"hostname {hostname} is already routed to tunnel {owner}")
            db.execute(
                "INSERT OR REPLACE INTO routes (hostname, tunnel_id, created_at)"
                " VALUES (?, ?, ?)",
                (hostname, str(tunnel_id), self._clock.time()),
            )
            self._routes[hostname] = tunnel_id

    def resolve(self, hostname: str) -> uuid.UUID | None:
        """Tunnel id for a public hostname (no port, any case); O(1), no I/O."""
        return self._routes.get(hostname.lower())

    def hostnames(self, tunnel_id: uuid.UUID) -> list[str]:
        return sorted(h for h, t in self._routes.items() if t == tunnel_id)

    def hostname_taken(self, hostname: str) -> bool:
        return hostname.lower() in self._routes

    def route_owner(self, hostname: str) -> TunnelRecord | None:
        tid = self._routes.get(hostname.lower())
        return None if tid is None else self._tunnels.get(tid)

    def remove_route(self, hostname: str, *, account_tag: str | None = None) -> bool:
        """Delete a route (only the account's own when `account_tag` is given)."""
        hostname = hostname.lower()
        with self._tx() as db:
            tid = self._routes.get(hostname)
            owner = None if tid is None else self._tunnels.get(tid)
            if tid is None or (account_tag is not None and (
                    owner is None or owner.account_tag != account_tag)):
                return False
            db.execute("DELETE FROM routes WHERE hostname = ?", (hostname,))
            self._routes.pop(hostname, None)
        return True

    def claim_route(self, hostname: str, tunnel_id: uuid.UUID, *, account_tag: str,
                    overwrite: bool = False) -> TunnelRecord | None:
        """Route `hostname` to the tunnel in one transaction; returns the owner that refused
        it (another account's, or another tunnel of this account without `overwrite`)."""
        hostname = hostname.lower()
        with self._tx() as db:
            owner = self.route_owner(hostname)
            if owner is not None and owner.id != tunnel_id and (
                    owner.account_tag != account_tag or not overwrite):
                return owner
            db.execute(
                "INSERT OR REPLACE INTO routes (hostname, tunnel_id, created_at)"
                " VALUES (?, ?, ?)", (hostname, str(tunnel_id), self._clock.time()))
            self._routes[hostname] = tunnel_id
        return None

    def create_quick_tunnel(self, hostname: str, *, account_tag: str) -> TunnelRecord | None:
        """A quick tunnel and its route in one transaction; None if the hostname is taken."""
        hostname = hostname.lower()
        rec = TunnelRecord(uuid.uuid4(), account_tag, secrets.token_bytes(32),
                           hostname.split(".", 1)[0], "quick", self._clock.time())
        with self._tx() as db:
            if db.execute("SELECT 1 FROM routes WHERE hostname = ?", (hostname,)).fetchone():
                return None
            db.execute(
                "INSERT INTO tunnels (id, account_tag, secret, name, kind, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (str(rec.id), rec.account_tag, rec.secret, rec.name, rec.kind, rec.created_at))
            db.execute("INSERT INTO routes (hostname, tunnel_id, created_at) VALUES (?, ?, ?)",
                       (hostname, str(rec.id), rec.created_at))
            self._tunnels[rec.id] = rec
            self._routes[hostname] = rec.id
        return rec

    def routes(self, account_tag: str) -> list[RouteRecord]:
        rows = self._db.execute(
            "SELECT r.hostname, r.tunnel_id, r.created_at FROM routes r JOIN tunnels t"
            " ON t.id = r.tunnel_id WHERE t.account_tag = ? ORDER BY r.hostname", (account_tag,))
        return [RouteRecord(h, uuid.UUID(t), c) for h, t, c in rows]

    # tunnels of an account ------------------------------------------------------------

    def find_tunnels(
        self, account_tag: str, *, name: str | None = None, include_deleted: bool = False
    ) -> list[TunnelRecord]:
        sql = ("SELECT id, account_tag, secret, name, kind, created_at, deleted_at FROM tunnels"
               " WHERE account_tag = ? AND kind = 'named'")
        params: list[object] = [account_tag]
        if name is not None:
            sql += " AND name = ?"
            params.append(name)
        if not include_deleted:
            sql += " AND deleted_at IS NULL"
        return [_tunnel(r) for r in self._db.execute(sql + " ORDER BY created_at", params)]

    def delete_tunnel(self, tunnel_id: uuid.UUID) -> None:
        """Soft delete: the record stays for `list --include-deleted`; routes go."""
        with self._tx() as db:
            db.execute("UPDATE tunnels SET deleted_at = ? WHERE id = ?",
                       (self._clock.time(), str(tunnel_id)))
            db.execute("DELETE FROM routes WHERE tunnel_id = ?", (str(tunnel_id),))
            self._tunnels.pop(tunnel_id, None)
            for host in [h for h, t in self._routes.items() if t == tunnel_id]:
                del self._routes[host]

    def purge_tunnel(self, tunnel_id: uuid.UUID) -> None:
        """Hard delete (expired quick tunnels): the record, its secret, routes and configs."""
        with self._tx() as db:
            for table in ("routes", "configurations", "local_configs"):
                db.execute(f"DELETE FROM {table} WHERE tunnel_id = ?", (str(tunnel_id),))
            db.execute("DELETE FROM tunnels WHERE id = ?", (str(tunnel_id),))
            self._tunnels.pop(tunnel_id, None)
            for host in [h for h, t in self._routes.items() if t == tunnel_id]:
                del self._routes[host]

    # accounts and API tokens ------------------------------------------------------------

    def create_account(self, name: str) -> AccountRecord:
        rec = AccountRecord(secrets.token_hex(16), name, self._clock.time())
        with self._tx() as db:
            if db.execute("SELECT 1 FROM accounts WHERE name = ?", (name,)).fetchone():
                raise StoreError(f"account {name!r} already exists")
            db.execute("INSERT INTO accounts (tag, name, created_at) VALUES (?, ?, ?)",
                       (rec.tag, rec.name, rec.created_at))
        return rec

    def account(self, *, tag: str | None = None, name: str | None = None) -> AccountRecord | None:
        row = self._db.execute(
            "SELECT tag, name, created_at FROM accounts WHERE tag = ? OR name = ?",
            (tag, name)).fetchone()
        return None if row is None else AccountRecord(*row)

    def accounts(self) -> list[AccountRecord]:
        rows = self._db.execute("SELECT tag, name, created_at FROM accounts ORDER BY created_at")
        return [AccountRecord(*r) for r in rows]

    def create_api_token(self, account_tag: str, name: str = "token") -> str:
        """A new bearer token for the account; only its hash is stored, so show it once."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._tx() as db:
            db.execute("INSERT INTO api_tokens (id, account_tag, token_hash, name, created_at)"
                       " VALUES (?, ?, ?, ?, ?)",
                       (str(uuid.uuid4()), account_tag, token_hash(token), name,
                        self._clock.time()))
        return token

    def authenticate(self, token: str) -> AccountRecord | None:
        """The account a bearer token belongs to (read from SQLite, so tokens made by another
        process work at once)."""
        row = self._db.execute(
            "SELECT a.tag, a.name, a.created_at FROM api_tokens k JOIN accounts a"
            " ON a.tag = k.account_tag WHERE k.token_hash = ? AND k.revoked_at IS NULL",
            (token_hash(token),)).fetchone()
        return None if row is None else AccountRecord(*row)

    # configurations ----------------------------------------------------------------------

    def add_configuration(self, tunnel_id: uuid.UUID, config: dict[str, object]) -> int:
        """Store the next version (pending); versions only grow, even past rejected ones."""
        with self._tx() as db:
            row = db.execute("SELECT MAX(version) FROM configurations WHERE tunnel_id = ?",
                             (str(tunnel_id),)).fetchone()
            version = 1 if row[0] is None else int(row[0]) + 1
            db.execute("INSERT INTO configurations (tunnel_id, version, config, status,"
                       " created_at) VALUES (?, ?, ?, 'pending', ?)",
                       (str(tunnel_id), version, json.dumps(config), self._clock.time()))
        return version

    def set_configuration_status(
        self, tunnel_id: uuid.UUID, version: int, status: str, detail: str = ""
    ) -> None:
        with self._tx() as db:
            db.execute("UPDATE configurations SET status = ?, detail = ? WHERE tunnel_id = ?"
                       " AND version = ?", (status, detail, str(tunnel_id), version))

    def configuration(self, tunnel_id: uuid.UUID) -> ConfigRecord | None:
        """The newest configuration that was not rejected."""
        row = self._db.execute(
            "SELECT version, config, status, detail, created_at FROM configurations"
            " WHERE tunnel_id = ? AND status != 'rejected' ORDER BY version DESC LIMIT 1",
            (str(tunnel_id),)).fetchone()
        if row is None:
            return None
        return ConfigRecord(tunnel_id, row[0], json.loads(row[1]), row[2], row[3], row[4])

    def save_local_config(self, tunnel_id: uuid.UUID, connector_id: uuid.UUID,
                          config: bytes) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO local_configs (tunnel_id, connector_id, config,"
                       " reported_at) VALUES (?, ?, ?, ?)",
                       (str(tunnel_id), str(connector_id),
                        config.decode("utf-8", "replace"), self._clock.time()))

    def local_configs(self, tunnel_id: uuid.UUID) -> dict[str, str]:
        rows = self._db.execute("SELECT connector_id, config FROM local_configs"
                                " WHERE tunnel_id = ? ORDER BY reported_at", (str(tunnel_id),))
        return {c: cfg for c, cfg in rows}
