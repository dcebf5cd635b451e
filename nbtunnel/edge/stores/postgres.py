"""The control plane on PostgreSQL (`--store postgresql://...`), shared by every edge.

psycopg 3 (async) with a connection pool; numbered migrations (`pg_migrations.py`); routes and
tunnels mirrored in memory and kept current by LISTEN/NOTIFY (`pg_cache.py`). Writes update
this edge's cache at once (its own API answers are consistent); other edges hear the change a
few milliseconds later. Races between edges are settled by the database: unique indexes for
hostnames and tunnel names, an advisory lock per tunnel for configuration versions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from nbtunnel.edge.clock import Clock
from nbtunnel.edge.store import TOKEN_PREFIX, token_hash
from nbtunnel.edge.stores.base import (
    AccountRecord,
    ConfigRecord,
    ControlStore,
    HostnameTaken,
    RouteRecord,
    StoreError,
    StoreLatency,
    StoreUnavailable,
    TunnelRecord,
    route_conflict,
)
from nbtunnel.edge.stores.pg_cache import TUNNEL_COLUMNS, CacheListener, RouteCache, tunnel_from_row
from nbtunnel.edge.stores.pg_migrations import migrate

log = logging.getLogger("nbtunnel.edge.stores")

POOL_MAX = 8
CONNECT_TIMEOUT = 10.0


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(//[^/:@]*):[^@/]*@", r"\1:***@", url)


class PostgresStore(ControlStore):
    """`ControlStore` on a PostgreSQL database shared by several edges."""

    backend = "postgresql"

    def __init__(self, url: str, *, pool_size: int = POOL_MAX,
                 clock: Clock | None = None) -> None:
        self.url = url
        self.clock = clock or Clock()  # timestamps; tests inject theirs
        self.pool_size = pool_size
        self.cache = RouteCache()
        self.latency = StoreLatency()
        self.schema_version = 0
        self.pool: Any = None
        self.listener: CacheListener | None = None

    async def start(self) -> None:
        try:
            import psycopg
            from psycopg_pool import AsyncConnectionPool
        except ImportError as exc:
            raise StoreError("--store postgresql:// needs psycopg: pip install "
                             "'nbtunnel[scale]'") from exc
        try:
            async with await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT)) as conn:
                self.schema_version = await migrate(conn)
            self.pool = AsyncConnectionPool(self.url, min_size=1, max_size=self.pool_size,
                                            open=False, kwargs={"autocommit": True})
            await self.pool.open(wait=True, timeout=CONNECT_TIMEOUT)
            self.listener = CacheListener(self.url, self.cache, self.pool)
            await self.listener.start()
        except (psycopg.Error, OSError) as exc:
            await self.aclose()
            raise StoreError(f"cannot use PostgreSQL at {redact(self.url)}: {exc}") from exc
        log.info("store: PostgreSQL %s (schema %d, %d tunnels, %d routes)", redact(self.url),
                 self.schema_version, len(self.cache.tunnels), len(self.cache.routes))

    async def aclose(self) -> None:
        if self.listener is not None:
            await self.listener.aclose()
            self.listener = None
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    @asynccontextmanager
    async def _conn(self, *, transaction: bool = False) -> AsyncIterator[Any]:
        """A pooled connection (in a transaction if asked); a lost database becomes
        StoreUnavailable, constraint violations pass through to the caller."""
        import psycopg

        if self.pool is None:
            raise StoreUnavailable("the PostgreSQL store is closed")
        with self.latency.timed():
            try:
                async with self.pool.connection(timeout=CONNECT_TIMEOUT) as conn:
                    if transaction:
                        async with conn.transaction():
                            yield conn
                    else:
                        yield conn
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(f"PostgreSQL is unavailable: {exc}") from exc

    async def _one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        async with self._conn() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchone()

    async def _all(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[Any]:
        async with self._conn() as conn:
            cur = await conn.execute(sql, params)
            return list(await cur.fetchall())

    # memory --------------------------------------------------------------------------------

    def resolve(self, hostname: str) -> uuid.UUID | None:
        return self.cache.routes.get(hostname.lower())

    def get_tunnel(self, tunnel_id: uuid.UUID) -> TunnelRecord | None:
        return self.cache.tunnels.get(tunnel_id)

    def tunnels(self) -> list[TunnelRecord]:
        return list(self.cache.tunnels.values())

    def hostnames(self, tunnel_id: uuid.UUID) -> list[str]:
        return sorted(self.cache.by_tunnel.get(tunnel_id, ()))

    def hostname_taken(self, hostname: str) -> bool:
        return hostname.lower() in self.cache.routes

    async def lookup_tunnel(self, tunnel_id: uuid.UUID) -> TunnelRecord | None:
        rec = self.cache.tunnels.get(tunnel_id)
        if rec is not None:
            return rec
        row = await self._one(f"SELECT {TUNNEL_COLUMNS} FROM tunnels WHERE id = %s"
                              " AND deleted_at IS NULL", (tunnel_id,))
        if row is None:
            return None
        rec = tunnel_from_row(row)
        self.cache.set_tunnel(rec)
        return rec

    # tunnels and routes ----------------------------------------------------------------------

    async def create_tunnel(
        self, name: str, *, account_tag: str, kind: str = "named",
        secret: bytes | None = None, tunnel_id: uuid.UUID | None = None,
    ) -> TunnelRecord:
        import psycopg

        rec = TunnelRecord(tunnel_id or uuid.uuid4(), account_tag,
                           secret if secret is not None else secrets.token_bytes(32),
                           name, kind, self.clock.time())
        try:
            async with self._conn() as conn:
                await conn.execute(
                    "INSERT INTO tunnels (id, account_tag, secret, name, kind, created_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s)",
                    (rec.id, rec.account_tag, rec.secret, rec.name, rec.kind, rec.created_at))
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name == "named_tunnels_unique":
                raise StoreError(f"a tunnel named {name!r} already exists") from exc
            raise StoreError(f"tunnel {rec.id} already exists") from exc
        self.cache.set_tunnel(rec)
        return rec

    async def create_quick_tunnel(self, hostname: str, *, account_tag: str) -> TunnelRecord:
        hostname = hostname.lower()
        rec = TunnelRecord(uuid.uuid4(), account_tag, secrets.token_bytes(32),
                           hostname.split(".", 1)[0], "quick", self.clock.time())
        async with self._conn(transaction=True) as conn:
            await conn.execute(
                "INSERT INTO tunnels (id, account_tag, secret, name, kind, created_at)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (rec.id, rec.account_tag, rec.secret, rec.name, rec.kind, rec.created_at))
            cur = await conn.execute(
                "INSERT INTO routes (hostname, tunnel_id, created_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (hostname) DO NOTHING RETURNING hostname",
                (hostname, rec.id, rec.created_at))
            if await cur.fetchone() is None:
                raise HostnameTaken(f"hostname {hostname} is taken")  # rolls the tunnel back
        self.cache.set_tunnel(rec)
        self.cache.set_route(hostname, rec.id)
        return rec

    async def claim_route(self, hostname: str, tunnel_id: uuid.UUID, *, account_tag: str,
                          overwrite: bool = False) -> None:
        hostname = hostname.lower()
        now = self.clock.time()
        async with self._conn(transaction=True) as conn:
            cur = await conn.execute(
                "INSERT INTO routes (hostname, tunnel_id, created_at) VALUES (%s, %s, %s)"
                " ON CONFLICT (hostname) DO NOTHING RETURNING hostname",
                (hostname, tunnel_id, now))
            if await cur.fetchone() is None:
                # taken (perhaps a moment ago, by another edge): the committed owner decides
                cur = await conn.execute(
                    f"SELECT {', '.join('t.' + c.strip() for c in TUNNEL_COLUMNS.split(','))}"
                    " FROM routes r JOIN tunnels t ON t.id = r.tunnel_id"
                    " WHERE r.hostname = %s FOR UPDATE OF r", (hostname,))
                row = await cur.fetchone()
                if row is None:  # deleted meanwhile: claim it now
                    await conn.execute(
                        "INSERT INTO routes (hostname, tunnel_id, created_at)"
                        " VALUES (%s, %s, %s)", (hostname, tunnel_id, now))
                else:
                    owner = tunnel_from_row(row)
                    if owner.id != tunnel_id:
                        if owner.account_tag != account_tag or not overwrite:
                            raise route_conflict(hostname, owner, account_tag)
                        await conn.execute(
                            "UPDATE routes SET tunnel_id = %s, created_at = %s"
                            " WHERE hostname = %s", (tunnel_id, now, hostname))
        self.cache.set_route(hostname, tunnel_id)

    async def add_route(self, hostname: str, tunnel_id: uuid.UUID) -> None:
        rec = await self.lookup_tunnel(tunnel_id)
        if rec is None:
            raise StoreError(f"unknown tunnel {tunnel_id}")
        await self.claim_route(hostname, tunnel_id, account_tag=rec.account_tag)

    async def remove_route(self, hostname: str, *, account_tag: str | None = None) -> bool:
        hostname = hostname.lower()
        if account_tag is None:
            row = await self._one("DELETE FROM routes WHERE hostname = %s RETURNING hostname",
                                  (hostname,))
        else:
            row = await self._one(
                "DELETE FROM routes r USING tunnels t WHERE r.hostname = %s"
                " AND t.id = r.tunnel_id AND t.account_tag = %s RETURNING r.hostname",
                (hostname, account_tag))
        if row is not None:
            self.cache.drop_route(hostname)
        return row is not None

    async def routes(self, account_tag: str) -> list[RouteRecord]:
        rows = await self._all(
            "SELECT r.hostname, r.tunnel_id, r.created_at FROM routes r JOIN tunnels t"
            " ON t.id = r.tunnel_id WHERE t.account_tag = %s ORDER BY r.hostname",
            (account_tag,))
        return [RouteRecord(h, t, c) for h, t, c in rows]

    async def find_tunnels(self, account_tag: str, *, name: str | None = None,
                           include_deleted: bool = False) -> list[TunnelRecord]:
        sql = (f"SELECT {TUNNEL_COLUMNS} FROM tunnels WHERE account_tag = %s"
               " AND kind = 'named'")
        params: list[object] = [account_tag]
        if name is not None:
            sql += " AND name = %s"
            params.append(name)
        if not include_deleted:
            sql += " AND deleted_at IS NULL"
        return [tunnel_from_row(r) for r in await self._all(sql + " ORDER BY created_at",
                                                             params)]

    async def delete_tunnel(self, tunnel_id: uuid.UUID) -> None:
        async with self._conn(transaction=True) as conn:
            await conn.execute("UPDATE tunnels SET deleted_at = %s WHERE id = %s",
                               (self.clock.time(), tunnel_id))
            await conn.execute("DELETE FROM routes WHERE tunnel_id = %s", (tunnel_id,))
        self.cache.tunnels.pop(tunnel_id, None)
        for host in list(self.cache.by_tunnel.get(tunnel_id, ())):
            self.cache.drop_route(host)

    async def purge_tunnel(self, tunnel_id: uuid.UUID) -> None:
        async with self._conn(transaction=True) as conn:
            for table in ("routes", "configurations", "local_configs"):
                await conn.execute(f"DELETE FROM {table} WHERE tunnel_id = %s", (tunnel_id,))
            await conn.execute("DELETE FROM tunnels WHERE id = %s", (tunnel_id,))
        self.cache.tunnels.pop(tunnel_id, None)
        for host in list(self.cache.by_tunnel.get(tunnel_id, ())):
            self.cache.drop_route(host)

    # accounts and API tokens -------------------------------------------------------------

    async def create_account(self, name: str) -> AccountRecord:
        import psycopg

        rec = AccountRecord(secrets.token_hex(16), name, self.clock.time())
        try:
            async with self._conn() as conn:
                await conn.execute("INSERT INTO accounts (tag, name, created_at)"
                                   " VALUES (%s, %s, %s)", (rec.tag, rec.name, rec.created_at))
        except psycopg.errors.UniqueViolation as exc:
            raise StoreError(f"account {name!r} already exists") from exc
        return rec

    async def account(self, *, tag: str | None = None,
                      name: str | None = None) -> AccountRecord | None:
        row = await self._one("SELECT tag, name, created_at FROM accounts"
                              " WHERE tag = %s OR name = %s", (tag, name))
        return None if row is None else AccountRecord(*row)

    async def accounts(self) -> list[AccountRecord]:
        rows = await self._all("SELECT tag, name, created_at FROM accounts ORDER BY created_at")
        return [AccountRecord(*r) for r in rows]

    async def create_api_token(self, account_tag: str, name: str = "token") -> str:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO api_tokens (id, account_tag, token_hash, name, created_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                (uuid.uuid4(), account_tag, token_hash(token), name, self.clock.time()))
        return token

    async def authenticate(self, token: str) -> AccountRecord | None:
        row = await self._one(
            "SELECT a.tag, a.name, a.created_at FROM api_tokens k JOIN accounts a"
            " ON a.tag = k.account_tag WHERE k.token_hash = %s AND k.revoked_at IS NULL",
            (token_hash(token),))
        return None if row is None else AccountRecord(*row)

    # configurations ------------------------------------------------------------------------

    async def add_configuration(self, tunnel_id: uuid.UUID, config: dict[str, object]) -> int:
        lock = int.from_bytes(hashlib.sha256(tunnel_id.bytes).digest()[:8], "big", signed=True)
        async with self._conn(transaction=True) as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
            cur = await conn.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM configurations WHERE tunnel_id = %s",
                (tunnel_id,))
            row = await cur.fetchone()
            version = int(row[0])
            await conn.execute(
                "INSERT INTO configurations (tunnel_id, version, config, status, created_at)"
                " VALUES (%s, %s, %s, 'pending', %s)",
                (tunnel_id, version, json.dumps(config), self.clock.time()))
        return version

    async def set_configuration_status(self, tunnel_id: uuid.UUID, version: int, status: str,
                                       detail: str = "") -> None:
        async with self._conn() as conn:
            await conn.execute("UPDATE configurations SET status = %s, detail = %s"
                               " WHERE tunnel_id = %s AND version = %s",
                               (status, detail, tunnel_id, version))

    async def configuration(self, tunnel_id: uuid.UUID) -> ConfigRecord | None:
        row = await self._one(
            "SELECT version, config, status, detail, created_at FROM configurations"
            " WHERE tunnel_id = %s AND status != 'rejected' ORDER BY version DESC LIMIT 1",
            (tunnel_id,))
        if row is None:
            return None
        return ConfigRecord(tunnel_id, row[0], json.loads(row[1]), row[2], row[3], row[4])

    async def save_local_config(self, tunnel_id: uuid.UUID, connector_id: uuid.UUID,
                                config: bytes) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO local_configs (tunnel_id, connector_id, config, reported_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (tunnel_id, connector_id)"
                " DO UPDATE SET config = EXCLUDED.config, reported_at = EXCLUDED.reported_at",
                (tunnel_id, connector_id, config.decode("utf-8", "replace"), self.clock.time()))

    async def local_configs(self, tunnel_id: uuid.UUID) -> dict[str, str]:
        rows = await self._all("SELECT connector_id, config FROM local_configs"
                               " WHERE tunnel_id = %s ORDER BY reported_at", (tunnel_id,))
        return {str(c): cfg for c, cfg in rows}
