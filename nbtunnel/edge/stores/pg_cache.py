"""Routes and live tunnels of a PostgreSQL store, mirrored in memory and kept current by
LISTEN/NOTIFY, so a visitor's request never waits on the database.

Triggers (migration 3) send `<table> <key>` on every change. One dedicated connection LISTENs;
a second task drains what arrived, groups the keys and re-reads those rows in one query each.
Re-reading (instead of trusting the payload) makes the cache converge on what the database
holds whatever the order: every commit is followed by its own notification. Listening starts
before the full load, so no change falls between the two; if the listening connection drops,
the cache reloads everything once it is back (changes in between were not heard).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from nbtunnel.edge.store import TunnelRecord
from nbtunnel.edge.stores.pg_migrations import NOTIFY_CHANNEL

log = logging.getLogger("nbtunnel.edge.stores")

TUNNEL_COLUMNS = "id, account_tag, secret, name, kind, created_at, deleted_at"
RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
BATCH = 5000


def tunnel_from_row(row: Any) -> TunnelRecord:
    return TunnelRecord(row[0], row[1], bytes(row[2]), row[3], row[4], row[5], row[6])


class RouteCache:
    """hostname → tunnel id, tunnel id → record and → hostnames (all O(1) per change)."""

    def __init__(self) -> None:
        self.routes: dict[str, uuid.UUID] = {}
        self.tunnels: dict[uuid.UUID, TunnelRecord] = {}
        self.by_tunnel: dict[uuid.UUID, set[str]] = {}

    def set_route(self, hostname: str, tunnel_id: uuid.UUID) -> None:
        old = self.routes.get(hostname)
        if old == tunnel_id:
            return
        if old is not None:
            self._unindex(hostname, old)
        self.routes[hostname] = tunnel_id
        self.by_tunnel.setdefault(tunnel_id, set()).add(hostname)

    def drop_route(self, hostname: str) -> None:
        old = self.routes.pop(hostname, None)
        if old is not None:
            self._unindex(hostname, old)

    def _unindex(self, hostname: str, tunnel_id: uuid.UUID) -> None:
        hosts = self.by_tunnel.get(tunnel_id)
        if hosts is not None:
            hosts.discard(hostname)
            if not hosts:
                del self.by_tunnel[tunnel_id]

    def set_tunnel(self, rec: TunnelRecord) -> None:
        if rec.deleted_at is None:
            self.tunnels[rec.id] = rec
        else:
            self.tunnels.pop(rec.id, None)

    def replace(self, tunnels: Iterable[TunnelRecord],
                routes: Iterable[tuple[str, uuid.UUID]]) -> None:
        fresh = RouteCache()
        for rec in tunnels:
            fresh.set_tunnel(rec)
        for host, tid in routes:
            fresh.set_route(host, tid)
        self.routes, self.tunnels, self.by_tunnel = fresh.routes, fresh.tunnels, fresh.by_tunnel


class CacheListener:
    """Owns the LISTEN connection and the task that applies changes to a `RouteCache`."""

    def __init__(self, url: str, cache: RouteCache, pool: Any,
                 on_change: Callable[[str, str], None] | None = None) -> None:
        self.url = url
        self.cache = cache
        self.pool = pool
        self.on_change = on_change
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.reloads = 0

    async def start(self) -> None:
        """Listen, load everything, then follow changes; returns once the cache is full."""
        conn = await self._listen()
        await self.reload()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._follow(conn)), loop.create_task(self._apply())]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _listen(self) -> Any:
        import psycopg

        conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return conn

    async def reload(self) -> None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {TUNNEL_COLUMNS} FROM tunnels WHERE deleted_at IS NULL")
            tunnels = [tunnel_from_row(r) for r in await cur.fetchall()]
            cur = await conn.execute("SELECT hostname, tunnel_id FROM routes")
            routes = [(str(h), t) for h, t in await cur.fetchall()]
        self.cache.replace(tunnels, routes)
        self.reloads += 1
        log.debug("route cache loaded: %d tunnels, %d routes", len(tunnels), len(routes))

    async def _follow(self, conn: Any) -> None:
        """Move notifications to the queue; reconnect (and reload) when the connection dies."""
        import psycopg

        attempt = 0
        while True:
            try:
                async for note in conn.notifies():
                    table, _, key = note.payload.partition(" ")
                    self._queue.put_nowait((table, key))
            except psycopg.Error as exc:
                log.warning("lost the PostgreSQL change feed (%s); reconnecting", exc)
            with contextlib.suppress(Exception):
                await conn.close()
            while True:
                await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
                attempt += 1
                try:
                    conn = await self._listen()
                    await self.reload()
                except (psycopg.Error, OSError) as exc:
                    log.warning("PostgreSQL change feed: reconnect failed: %s", exc)
                    continue
                attempt = 0
                log.info("PostgreSQL change feed is back; route cache reloaded")
                break

    async def _apply(self) -> None:
        import psycopg

        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < BATCH:
                batch.append(self._queue.get_nowait())
            hosts = {k for t, k in batch if t == "routes"}
            tids = {uuid.UUID(k) for t, k in batch if t == "tunnels"}
            try:
                await self._reread(hosts, tids)
            except (psycopg.Error, OSError) as exc:
                log.warning("could not re-read %d changed rows: %s", len(batch), exc)
                continue
            if self.on_change is not None:
                for table, key in batch:
                    self.on_change(table, key)

    async def _reread(self, hosts: set[str], tids: set[uuid.UUID]) -> None:
        async with self.pool.connection() as conn:
            if tids:
                cur = await conn.execute(
                    f"SELECT {TUNNEL_COLUMNS} FROM tunnels WHERE id = ANY(%s)", (list(tids),))
                found = {r[0]: tunnel_from_row(r) for r in await cur.fetchall()}
                for tid in tids:
                    rec = found.get(tid)
                    if rec is None:
                        self.cache.tunnels.pop(tid, None)
                    else:
                        self.cache.set_tunnel(rec)
            if hosts:
                cur = await conn.execute(
                    "SELECT hostname, tunnel_id FROM routes WHERE hostname = ANY(%s)",
                    (list(hosts),))
                present = {str(h): t for h, t in await cur.fetchall()}
                for host in hosts:
                    if host in present:
                        self.cache.set_route(host, present[host])
                    else:
                        self.cache.drop_route(host)

