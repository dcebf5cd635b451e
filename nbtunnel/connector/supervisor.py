"""The connector: N HA connections to the edge, reconnecting with cloudflared's backoff.

Connection 0 starts first; once it registers, connections 1..N-1 start one second apart (as
cloudflared does). Each index keeps its own backoff; a successful registration resets it.
`shutdown()` is the graceful path (SIGINT/SIGTERM): every connection unregisters, in-flight
requests get up to the grace period, then everything closes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from nbtunnel import __version__
from nbtunnel.connector.access_control import AccessControl
from nbtunnel.connector.backoff import Backoff
from nbtunnel.connector.edge_connection import (
    Dialer,
    DialTarget,
    EdgeConnection,
    RegistrationRefused,
)
from nbtunnel.connector.edgepool import EdgePool
from nbtunnel.connector.events import ConnectionEvent, TunnelEvent
from nbtunnel.connector.hello import HelloWorldServer
from nbtunnel.connector.ingress import Ingress, IngressError
from nbtunnel.connector.inspector import Inspector
from nbtunnel.connector.origin import OriginClient
from nbtunnel.connector.origin_guard import GuardedOrigin
from nbtunnel.connector.proxy import StreamProxy
from nbtunnel.core.credentials import Credentials
from nbtunnel.core.errors import NbtunnelError
from nbtunnel.core.schema import ClientInfo, TunnelAuth
from nbtunnel.transport.dial import dial
from nbtunnel.transport.errors import ConnectTimeoutError, HandshakeError
from nbtunnel.transport.quic import QuicSettings
from nbtunnel.transport.trust import Trust

log = logging.getLogger("nbtunnel.connector")

# cloudflared's default list. `management_logs` is kept (the edge may expect cloudflared's
# exact set); its hostname is answered by the proxy's internal rule, never by the origin.
FEATURES = [
    "allow_remote_config", "serialized_headers", "support_datagram_v2", "support_quic_eof",
    "management_logs",
]


def client_arch() -> str:
    machine = platform.machine().lower()
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
    return f"{sys.platform}_{machine}"


@dataclass
class ConnectorConfig:
    """What a connector needs: where the edge is, who we are, what we serve."""

    edge: list[tuple[str, int]]
    credentials: Credentials
    ingress: Ingress
    cacert: str | None = None
    ha_connections: int = 4
    grace_period: float = 30.0
    retries: int = 5
    quic_backend: str | None = None
    protocol: str = "quic"  # "quic", "http2", or "auto" (QUIC, falling back to HTTP/2)
    config_flags: dict[str, str] = field(default_factory=dict)
    access: AccessControl | None = None  # --auth, checked before the origin (origin_guard.py)
    inspector: Inspector | None = None  # keeps the last requests (inspector.py)
    pool: EdgePool | None = None
    """Cloudflare's discovered edge: one connection per address, rotating (edge is unused)."""
    trust: Trust | None = None
    """CA material for the edge (default: cacert alone, else the system store)."""
    ha_start_delay: float = 1.0
    """Connection i (i > 0) starts i times this long after connection 0 registered."""
    embedded_edge: bool = False
    """The edge runs in this process: several connections to its one address are expected."""

    @property
    def edge_trust(self) -> Trust:
        if self.trust is not None:
            return self.trust
        return Trust.from_file(self.cacert) if self.cacert else Trust()


class NoEdgeAddress(NbtunnelError):
    """Every discovered edge address is held by another connection."""


class Sleeper(Protocol):
    """The clock the supervisor waits on (``asyncio.sleep`` by default)."""

    async def sleep(self, seconds: float) -> None: ...


class _LoopClock:
    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Connector:
    """Runs the HA connections; `run()` returns after `shutdown()` or cancellation."""

    def __init__(self, config: ConnectorConfig, *, clock: Sleeper | None = None,
                 dial: Dialer = dial) -> None:
        self.config = config
        self._clock = clock or _LoopClock()
        self._dial = dial
        self.connector_id = uuid.uuid4()
        self.ingress = config.ingress
        self.config_version = -1
        self.local_config_pushes = 0
        self.connections: dict[int, EdgeConnection] = {}
        self._observers: list[Callable[[TunnelEvent], None]] = []
        self._edge_shift: dict[int, int] = {}  # static --edge list: rotation per index
        self._stopping = asyncio.Event()
        self._first_registered = asyncio.Event()
        self._changed = asyncio.Event()
        self._quic_worked = False  # once QUIC registered anywhere, "auto" never falls back
        self._hello: HelloWorldServer | None = None
        self._origin = OriginClient(connector_id=str(self.connector_id))
        self.guard = GuardedOrigin(self._origin, config.access, config.inspector) if (
            config.access is not None or config.inspector is not None) else None
        # request events are made only once someone observes them (metrics, the notebook)
        self._proxy = StreamProxy(self.guard or self._origin, lambda: self.ingress, self._service)

    def subscribe(self, observer: Callable[[TunnelEvent], None]) -> None:
        self._observers.append(observer)
        self._proxy.emit = self._emit

    def _emit(self, event: TunnelEvent) -> None:
        if isinstance(event, ConnectionEvent):
            self._changed.set()
        for observer in self._observers:
            try:
                observer(event)
            except Exception:  # an observer must never break the connector
                log.exception("observer failed")

    def _service(self, service: str) -> str:
        if service in ("hello_world", "hello-world"):
            assert self._hello is not None
            return self._hello.url
        return service

    @property
    def ready_connections(self) -> int:
        return sum(1 for c in self.connections.values()
                   if c.registered.is_set() and c.conn is not None and not c.conn.closed)

    async def wait_ready(self, n: int = 1) -> None:
        """Wait until at least n connections are registered (for tests and the notebook)."""
        while self.ready_connections < n:
            self._changed.clear()
            await self._changed.wait()

    def local_config(self) -> bytes:
        self.local_config_pushes += 1
        doc: dict[str, object] = {"__configuration_flags": self.config.config_flags,
                                  "ingress": self.ingress.to_json_rules(),
                                  "warp-routing": self.ingress.warp_routing.to_json()}
        if self.ingress.defaults:
            doc["originRequest"] = self.ingress.defaults
        return json.dumps(doc, separators=(",", ":")).encode()

    def apply_remote_config(self, version: int, config: bytes) -> tuple[int, str]:
        """updateConfiguration: apply only newer versions; a bad one keeps the old config."""
        if version <= self.config_version:
            return self.config_version, ""
        try:
            ingress = Ingress.from_json(config)
        except IngressError as exc:
            log.error("Failed to deserialize new configuration: %s", exc)
            return self.config_version, str(exc)
        self.ingress = ingress
        self.config_version = version
        log.info("Updated to new configuration version=%d", version)
        return version, ""

    async def run(self) -> None:
        if any(r.service in ("hello_world", "hello-world") for r in self.ingress.rules):
            self._hello = HelloWorldServer()
            await self._hello.start()
        try:
            async with asyncio.TaskGroup() as tg:
                n = self._ha_count()
                for index in range(n):
                    tg.create_task(self._keep_connected(index))
                await self._stopping.wait()
        finally:
            await self._origin.aclose()
            if self._hello is not None:
                await self._hello.stop()

    def _ha_count(self) -> int:
        """cloudflared caps HA connections by the edge addresses (one connection each);
        a self-hosted edge address takes several, and the log says so."""
        wanted = self.config.ha_connections
        if self.config.pool is not None:
            available = self.config.pool.available()
            if wanted > available:
                log.info("You requested %d HA connections but I can give you at most %d.",
                         wanted, available)
                return max(available, 1)
            return wanted
        addresses = len(set(self.config.edge))
        if wanted > addresses and not self.config.embedded_edge:
            log.info("You requested %d HA connections and gave %d edge address%s: cloudflared "
                     "would open at most %d; this self-hosted edge gets all %d (several per "
                     "address)", wanted, addresses, "" if addresses == 1 else "es", addresses,
                     wanted)
        return wanted

    def _target(self, index: int) -> DialTarget:
        trust = self.config.edge_trust
        if self.config.pool is not None:
            addr = self.config.pool.addr_for(index)
            if addr is None:
                raise NoEdgeAddress("there are no free edge addresses left to resolve to")
            return DialTarget(addr.ip, addr.port, trust.cafile, cadata=trust.cadata,
                              trust=trust.description)
        edges = self.config.edge
        host, port = edges[(index + self._edge_shift.get(index, 0)) % len(edges)]
        return DialTarget(host, port, trust.cafile, cadata=trust.cadata,
                          trust=trust.description)

    def _next_edge(self, index: int) -> None:
        """Several `--edge` addresses of a self-hosted deployment: a connection that ended
        (its edge died, drained or refused) tries the next address, so HA connections move to
        a live edge instead of waiting for the dead one."""
        if self.config.pool is None and len(set(self.config.edge)) > 1:
            self._edge_shift[index] = self._edge_shift.get(index, 0) + 1

    def _rotate(self, index: int, why: str) -> None:
        """cloudflared's IpAddrFallback: a dial error, an idle timeout or EDUPCONN moves this
        connection to another edge address (the old one is given back)."""
        if self.config.pool is None:
            return
        old = self.config.pool.used_by(index)
        new = self.config.pool.rotate(index, True, asyncio.get_running_loop().time())
        log.info("Connection %d: %s; edge address %s -> %s", index, why, old, new or "none free")

    async def _keep_connected(self, index: int) -> None:
        if index > 0:
            await self._first_registered.wait()  # shutdown() sets it too
            await self._sleep_unless_stopping(index * self.config.ha_start_delay)
        creds = self.config.credentials
        client = ClientInfo(client_id=self.connector_id.bytes, features=list(FEATURES),
                            version=f"nbtunnel-{__version__}", arch=client_arch())
        backoff = Backoff(max_retries=self.config.retries)
        settings = QuicSettings(backend=self.config.quic_backend)
        protocol = "http2" if self.config.protocol == "http2" else "quic"
        while not self._stopping.is_set():
            try:
                target = self._target(index)
            except NoEdgeAddress as exc:
                if not await self._pause(index, backoff, str(exc)):
                    break
                continue
            conn = EdgeConnection(
                index, target, TunnelAuth(creds.account_tag, creds.secret),
                creds.tunnel_id.bytes, client, self._proxy, settings=settings,
                attempts=backoff.retries, local_config=self.local_config,
                on_config=self.apply_remote_config, emit=self._emit, protocol=protocol,
                dial=self._dial,
            )
            self.connections[index] = conn
            self._emit(ConnectionEvent(index, "connecting", edge=conn.edge))
            async with asyncio.TaskGroup() as tg:
                announce = tg.create_task(self._announce(conn, backoff))
                try:
                    await conn.run()
                    reason = conn.conn.close_reason if conn.conn else "closed"
                    if reason == "idle timeout":
                        self._rotate(index, "the edge connection timed out idle")
                except RegistrationRefused as exc:
                    reason = f"registration refused: {exc}"
                    if exc.error.cause == "EDUPCONN":
                        self._rotate(index, "the edge already has a connection from us there "
                                     "(EDUPCONN)")
                except (NbtunnelError, OSError) as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                    if isinstance(exc, HandshakeError | OSError):
                        self._rotate(index, "dial failed")
                    if self._fall_back(protocol, exc, backoff):
                        log.warning("Connection %d: QUIC keeps failing (%s); switching to the "
                                    "fallback protocol http2", index, reason)
                        protocol = "http2"
                        backoff.reset()
                finally:
                    announce.cancel()
            if self._stopping.is_set():
                break
            self._next_edge(index)
            if not await self._pause(index, backoff, reason, conn.edge):
                break
        self._emit(ConnectionEvent(index, "closed"))

    async def _pause(self, index: int, backoff: Backoff, reason: str, edge: str = "") -> bool:
        """Back off before the next attempt; False when shutting down."""
        if self._stopping.is_set():
            return False
        delay = backoff.next_delay()
        log.warning("Connection %d to %s ended (%s); retrying in up to %.0fs", index,
                    edge or "the edge", reason, backoff.ceiling / 2 or 1)
        self._emit(ConnectionEvent(index, "reconnecting", edge=edge, detail=reason,
                                   delay=delay))
        await self._sleep_unless_stopping(delay)
        return not self._stopping.is_set()

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        """Sleep on the clock, ending early when shutdown() starts."""
        if seconds <= 0 or self._stopping.is_set():
            return
        async with asyncio.TaskGroup() as tg:
            sleeping = tg.create_task(self._clock.sleep(seconds))
            stopping = tg.create_task(self._stopping.wait())
            await asyncio.wait([sleeping, stopping], return_when=asyncio.FIRST_COMPLETED)
            sleeping.cancel()
            stopping.cancel()

    def _fall_back(self, protocol: str, exc: Exception, backoff: Backoff) -> bool:
        """cloudflared's auto fallback: after max retries, or at once when the QUIC handshake
        timed out (UDP blocked), unless QUIC already worked for some connection."""
        if self.config.protocol != "auto" or protocol != "quic" or self._quic_worked:
            return False
        return isinstance(exc, ConnectTimeoutError) or backoff.retries >= backoff.max_retries

    async def _announce(self, conn: EdgeConnection, backoff: Backoff) -> None:
        await conn.registered.wait()
        backoff.reset()
        details = conn.details
        assert details is not None
        conn_id = str(uuid.UUID(bytes=details.uuid)) if len(details.uuid) == 16 else ""
        if conn.protocol == "quic":
            self._quic_worked = True
        log.info("Registered tunnel connection connIndex=%d connection=%s location=%s "
                 "protocol=%s edge=%s", conn.index, conn_id, details.location_name,
                 conn.protocol, conn.edge)
        self._first_registered.set()
        self._emit(ConnectionEvent(conn.index, "registered", edge=conn.edge,
                                   location=details.location_name, connection_id=conn_id))

    async def shutdown(self, grace: float | None = None) -> None:
        """Unregister every connection, finish in-flight requests within the grace period."""
        if self._stopping.is_set():
            return
        grace = self.config.grace_period if grace is None else grace
        log.info("Initiating graceful shutdown (grace period %.0fs)", grace)
        for conn in self.connections.values():
            self._emit(ConnectionEvent(conn.index, "draining", edge=conn.edge))
        self._stopping.set()
        self._first_registered.set()  # release connections still waiting to start
        await asyncio.gather(*(c.unregister(grace) for c in self.connections.values()),
                             return_exceptions=True)
