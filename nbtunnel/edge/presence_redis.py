"""Presence on Redis (`--presence redis://...`, redis-py asyncio).

Keys (all under `nbt:`), every one with a TTL the owning edge refreshes each `HEARTBEAT`:
- `edge:<id>`: the edge's `EdgeInfo` (JSON); `edges`: zset of edge ids scored by expiry;
- `tunnel:<tunnel id>`: zset of the edges holding a usable connection of the tunnel, scored by
  expiry (an entry outlives a SIGKILLed edge by at most `TTL`);
- `conns:<edge id>`: hash connection id → the connection's description;
- `host:<hostname>`: a quick-tunnel hostname reservation (SET NX).
Pub/sub: `presence` carries tunnel ids whose holders changed (others drop their cached
answer); `cmd:<edge id>` carries pushes and closes for that edge, answered on a list
`reply:<uuid>` the asker BLPOPs (a list, so an answer cannot be missed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from nbtunnel.edge.presence import EdgeInfo, P, Presence
from nbtunnel.edge.presence_commands import Commands
from nbtunnel.edge.registry import LiveConnection, Registry
from nbtunnel.edge.stores.base import StoreError
from nbtunnel.edge.stores.postgres import redact

log = logging.getLogger("nbtunnel.edge.presence")

HEARTBEAT = 2.0
TTL = 6.0
CACHE_TTL = 1.0
HOST_RESERVATION = 600


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class RedisPresence(Commands, Presence):
    """`Presence` shared through one Redis (see module docstring)."""

    shared = True

    def __init__(self, url: str, *, edge_id: str, location: str, registry: Registry,
                 advertise: Callable[[], EdgeInfo]) -> None:
        self.url = url
        self.edge_id = edge_id
        self.location = location
        self.registry = registry
        self.advertise = advertise
        self.r: Any = None
        self._pubsub: Any = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._dirty: set[uuid.UUID] = set()
        self._conn_ops: list[tuple[str, LiveConnection]] = []
        self._wake = asyncio.Event()
        self._held: set[uuid.UUID] = set()  # tunnels we announced as held
        self._cache: dict[uuid.UUID, tuple[float, list[str]]] = {}
        self._edges: dict[str, EdgeInfo] = {}
        self._dead: dict[str, float] = {}
        self._draining = False
        self._failing = False
        self._announced = False

    # lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            import redis.asyncio as aredis
        except ImportError as exc:
            raise StoreError("--presence redis:// needs redis: pip install "
                             "'nbtunnel[scale]'") from exc
        self.r = aredis.Redis.from_url(self.url, decode_responses=True,
                                       socket_connect_timeout=5, health_check_interval=10)
        try:
            await self.r.ping()
            self._pubsub = self.r.pubsub(ignore_subscribe_messages=True)
            await self._pubsub.subscribe(P + "presence", P + "cmd:" + self.edge_id)
        except (OSError, aredis.RedisError) as exc:
            await self.aclose()
            raise StoreError(f"cannot use Redis at {redact(self.url)}: {exc}") from exc
        for work in (self._listen(), self._writer()):
            self._spawn(work)
        log.info("presence: Redis %s as edge %s (%s)", redact(self.url), self.edge_id,
                 self.location)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.r is None:
            return
        with contextlib.suppress(Exception):  # leave at once instead of expiring
            async with asyncio.timeout(2):
                pipe = self.r.pipeline(transaction=False)
                pipe.delete(P + "edge:" + self.edge_id, P + "conns:" + self.edge_id)
                pipe.zrem(P + "edges", self.edge_id)
                for tid in self._held:
                    pipe.zrem(f"{P}tunnel:{tid}", self.edge_id)
                    pipe.publish(P + "presence", str(tid))
                await pipe.execute()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        with contextlib.suppress(Exception):
            await self.r.aclose()
        self.r = None

    # what this edge holds ---------------------------------------------------------------

    def connection_changed(self, state: str, live: LiveConnection) -> None:
        self._dirty.add(live.tunnel_id)
        self._conn_ops.append((state, live))
        self._wake.set()

    async def announce(self) -> None:
        """The edge is listening: appear in the directory (complete) and keep refreshing."""
        try:
            await self._heartbeat_once()
        except Exception as exc:
            self._note_failure(exc)
        if not self._announced:
            self._announced = True
            self._spawn(self._heartbeat())

    async def drain(self) -> None:
        self._draining = True
        try:
            await self._write(set(self._held), [])
        except Exception as exc:  # the entries expire with their TTL anyway
            self._note_failure(exc)

    def _usable(self, tid: uuid.UUID) -> bool:
        return not self._draining and any(
            not c.draining and not c.transport.closed for c in self.registry.connections(tid))

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            ops, self._conn_ops = self._conn_ops, []
            try:
                await self._write(dirty, ops)
            except Exception as exc:  # Redis down: the next heartbeat rewrites everything
                self._note_failure(exc)

    async def _write(self, dirty: set[uuid.UUID], ops: list[tuple[str, LiveConnection]]) -> None:
        expiry = _ms(time.time() + TTL)
        pipe = self.r.pipeline(transaction=False)
        for state, live in ops:
            if state == "closed":
                pipe.hdel(P + "conns:" + self.edge_id, str(live.connection_id))
            else:
                pipe.hset(P + "conns:" + self.edge_id, str(live.connection_id),
                          json.dumps(self._describe(live)))
        for tid in dirty:
            key = f"{P}tunnel:{tid}"
            if self._usable(tid):
                pipe.zadd(key, {self.edge_id: expiry})
                pipe.pexpire(key, _ms(TTL))
                self._held.add(tid)
            else:
                pipe.zrem(key, self.edge_id)
                self._held.discard(tid)
            pipe.publish(P + "presence", str(tid))
        if self._draining:
            pipe.set(P + "edge:" + self.edge_id, json.dumps(self._info().to_json()),
                     px=_ms(TTL))
        await pipe.execute()

    def _describe(self, live: LiveConnection) -> dict[str, Any]:
        return {**live.describe(), "tunnel_id": str(live.tunnel_id), "edge_id": self.edge_id}

    def _info(self) -> EdgeInfo:
        info = self.advertise()
        conns = self.registry.connections()
        return EdgeInfo(info.id, info.location, info.peer, info.front, info.pid,
                        info.started_at, len(conns), len({c.tunnel_id for c in conns}),
                        self._draining)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            try:
                await self._heartbeat_once()
                if self._failing:
                    log.info("presence: Redis is reachable again")
                    self._failing = False
            except Exception as exc:
                self._note_failure(exc)

    async def _heartbeat_once(self) -> None:
        now = time.time()
        expiry = _ms(now + TTL)
        held = {c.tunnel_id for c in self.registry.connections()}
        usable = {tid for tid in held if self._usable(tid)}
        pipe = self.r.pipeline(transaction=True)
        pipe.set(P + "edge:" + self.edge_id, json.dumps(self._info().to_json()), px=_ms(TTL))
        pipe.zadd(P + "edges", {self.edge_id: expiry})
        pipe.zremrangebyscore(P + "edges", "-inf", _ms(now))
        for tid in usable:
            pipe.zadd(f"{P}tunnel:{tid}", {self.edge_id: expiry})
            pipe.pexpire(f"{P}tunnel:{tid}", _ms(TTL))
        for tid in self._held - usable:
            pipe.zrem(f"{P}tunnel:{tid}", self.edge_id)
            pipe.publish(P + "presence", str(tid))
        conns_key = P + "conns:" + self.edge_id
        pipe.delete(conns_key)
        mapping = {str(c.connection_id): json.dumps(self._describe(c))
                   for c in self.registry.connections()}
        if mapping:
            pipe.hset(conns_key, mapping=mapping)
            pipe.pexpire(conns_key, _ms(TTL))
        await pipe.execute()
        self._held = usable
        await self._refresh_directory()

    async def _refresh_directory(self) -> None:
        ids = await self.r.zrangebyscore(P + "edges", _ms(time.time()), "+inf")
        docs = await self.r.mget([P + "edge:" + i for i in ids]) if ids else []
        edges = {}
        for doc in docs:
            if doc:
                info = EdgeInfo.from_json(json.loads(doc))
                edges[info.id] = info
        self._edges = edges

    def _note_failure(self, exc: BaseException) -> None:
        if not self._failing:
            log.warning("presence: Redis unavailable (%s); serving local connections only",
                        exc)
            self._failing = True

    # what other edges hold ------------------------------------------------------------

    async def _holders(self, tunnel_id: uuid.UUID, *, fresh: bool = False) -> list[str]:
        hit = self._cache.get(tunnel_id)
        now = time.monotonic()
        if hit is not None and hit[0] > now and not fresh:
            return hit[1]
        try:
            ids = await self.r.zrangebyscore(f"{P}tunnel:{tunnel_id}", _ms(time.time()), "+inf")
        except Exception as exc:
            self._note_failure(exc)
            return hit[1] if hit else []
        self._cache[tunnel_id] = (now + CACHE_TTL, ids)
        if any(i not in self._edges for i in ids if i != self.edge_id):
            with contextlib.suppress(Exception):
                await self._refresh_directory()
        return list(ids)

    def _live_others(self, ids: list[str]) -> list[EdgeInfo]:
        now = time.monotonic()
        out = []
        for i in ids:
            info = self._edges.get(i)
            if i == self.edge_id or info is None or info.draining or info.peer is None:
                continue
            if self._dead.get(i, 0.0) > now:
                continue
            out.append(info)
        return out

    async def edges_for(self, tunnel_id: uuid.UUID) -> list[EdgeInfo]:
        return self._live_others(await self._holders(tunnel_id))

    def cached_edges_for(self, tunnel_id: uuid.UUID) -> list[EdgeInfo]:
        hit = self._cache.get(tunnel_id)
        return self._live_others(hit[1]) if hit else []

    async def heard_from(self, edge_id: str) -> float | None:
        try:
            left = await self.r.pttl(P + "edge:" + edge_id)
        except Exception as exc:
            self._note_failure(exc)
            return None
        return None if left < 0 else max(0.0, TTL - left / 1000)

    def forget_edge(self, edge_id: str) -> None:
        self._dead[edge_id] = time.monotonic() + TTL

    async def edges(self) -> list[EdgeInfo]:
        await self._refresh_directory()
        return sorted(self._edges.values(), key=lambda e: e.id)

    async def remote_connections(self, tunnel_id: uuid.UUID) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for edge_id in await self._holders(tunnel_id, fresh=True):
            if edge_id == self.edge_id:
                continue
            for doc in await self.r.hvals(P + "conns:" + edge_id):
                conn = json.loads(doc)
                if conn.get("tunnel_id") == str(tunnel_id):
                    out.append(conn)
        return out

    async def reserve_hostname(self, hostname: str) -> bool:
        return bool(await self.r.set(P + "host:" + hostname.lower(), self.edge_id, nx=True,
                                     ex=HOST_RESERVATION))

    async def _listen(self) -> None:
        while True:
            try:
                msg = await self._pubsub.get_message(timeout=HEARTBEAT)
            except Exception as exc:
                self._note_failure(exc)
                await asyncio.sleep(HEARTBEAT)
                continue
            if msg is None or msg.get("type") != "message":
                continue
            if msg["channel"] == P + "presence":
                with contextlib.suppress(ValueError):
                    self._cache.pop(uuid.UUID(msg["data"]), None)
            else:
                self._spawn(self._run_command(msg["data"]))
