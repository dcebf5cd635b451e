"""One edge's membership in a deployment of several: its identity, presence and peering.

Without `--presence` an edge is alone (`Presence()` answers "nothing elsewhere") and opens no
peer listener. With Redis presence it announces itself, listens for forwarded requests from
the other edges (`peering.PeerServer`, QUIC on `--peer-listen`) and forwards requests for
tunnels it does not hold (`peering.PeerClient`, the public front's `remote`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from nbtunnel.edge.peering import PeerClient, PeerServer, peer_token
from nbtunnel.edge.presence import EdgeInfo, LocalPresence, Presence
from nbtunnel.edge.registry import LiveConnection, Registry
from nbtunnel.edge.rest_api import ControlApi
from nbtunnel.edge.stores.base import StoreError
from nbtunnel.transport.quic import QuicServer, QuicSettings, serve
from nbtunnel.transport.tls import LocalCA

log = logging.getLogger("nbtunnel.edge.cluster")


DRAIN_PROPAGATION = 0.25


def open_presence(spec: str | None, *, edge_id: str, location: str, registry: Registry,
                  advertise: Callable[[], EdgeInfo]) -> Presence:
    """`--presence`: None for a single edge, `redis://...` for several."""
    if not spec:
        return LocalPresence(edge_id, location)
    if not spec.startswith(("redis://", "rediss://", "unix://")):
        raise StoreError(f"unsupported --presence {spec.split('://')[0]}://...; "
                         "use redis://HOST:PORT/DB")
    from nbtunnel.edge.presence_redis import RedisPresence

    return RedisPresence(spec, edge_id=edge_id, location=location, registry=registry,
                         advertise=advertise)


def default_edge_id(location: str) -> str:
    return f"{location.lower()}-{secrets.token_hex(3)}"


@dataclass
class ClusterConfig:
    presence: str | None
    edge_id: str
    location: str
    peer_host: str = "127.0.0.1"
    peer_port: int = 0
    peer_advertise: str | None = None  # the address other edges dial (default: peer_host)
    peer_secret: bytes | None = None  # default: the deployment's CA key (never in Redis)
    quic_backend: str | None = None


class Cluster:
    """Owns presence, the peer listener and the peer links (see module docstring)."""

    def __init__(self, config: ClusterConfig, registry: Registry) -> None:
        self.config = config
        self.registry = registry
        self.started_at = time.time()
        self.presence: Presence = Presence()
        self.client: PeerClient | None = None
        self.server: PeerServer | None = None
        self._listener: QuicServer | None = None
        self.front_address: tuple[str, int] | None = None
        self.draining = False

    @property
    def edge_id(self) -> str:
        return self.config.edge_id

    def info(self) -> EdgeInfo:
        peer = None
        if self._listener is not None:
            host = self.config.peer_advertise or self.config.peer_host
            peer = (host, self._listener.sockname[1])
        return EdgeInfo(self.config.edge_id, self.config.location, peer, self.front_address,
                        os.getpid(), self.started_at, draining=self.draining)

    async def start(self, control_api: ControlApi, ca: LocalCA) -> None:
        cfg = self.config
        self.presence = open_presence(cfg.presence, edge_id=cfg.edge_id, location=cfg.location,
                                      registry=self.registry, advertise=self.info)
        self.presence.bind(control_api.push_local, control_api.close_local)
        control_api.presence = self.presence
        await self.presence.start()
        if not self.presence.shared:
            return
        if cfg.peer_host in ("0.0.0.0", "::", "") and not cfg.peer_advertise:
            raise StoreError("--peer-listen on every address needs --peer-advertise HOST (the "
                             "address other edges dial)")
        token = peer_token(cfg.peer_secret or ca.ca_key_path.read_bytes())
        self.server = PeerServer(self.registry, token, cfg.edge_id)
        self._listener = await serve(
            cfg.peer_host, cfg.peer_port, certfile=str(ca.cert_path), keyfile=str(ca.key_path),
            on_connection=self.server.serve,
            settings=QuicSettings(idle_timeout=10.0, backend=cfg.quic_backend))
        self.client = PeerClient(self.presence, cafile=str(ca.ca_path), token=token,
                                 settings=QuicSettings(idle_timeout=10.0,
                                                       backend=cfg.quic_backend))
        log.info("edge %s (%s): peers reach it on udp %s:%d", cfg.edge_id, cfg.location,
                 *self._listener.sockname)

    def connection_changed(self, state: str, live: LiveConnection) -> None:
        self.presence.connection_changed(state, live)

    async def drain(self, timeout: float) -> int:
        """SIGTERM of one edge among several: the others stop forwarding here at once, every
        connector connection stops taking new requests and is closed as soon as its in-flight
        requests are done, so its connector reconnects to another edge (the next `--edge`
        address) while its other HA connections keep serving. Returns the connections left
        open after `timeout`."""
        self.draining = True
        await self.presence.drain()
        # a moment for the other edges to hear it before the connections stop taking requests
        # (a request forwarded here meanwhile finds none and is retried elsewhere if it can be)
        await asyncio.sleep(DRAIN_PROPAGATION)
        conns = self.registry.connections()
        for live in conns:
            if not live.draining:
                live.draining = True  # the last request to finish closes it (exchange.py)
                self.presence.connection_changed("draining", live)
            if live.in_flight == 0:
                live.transport.close(0, "edge draining: reconnect to another edge")
        if conns:
            log.info("draining: %d connector connection(s) asked to move", len(conns))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    for conn in conns:  # they close in parallel; wait for the slowest
                        await conn.transport.wait_closed()
        return sum(1 for c in conns if not c.transport.terminated)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        await self.presence.aclose()
        if self._listener is not None:
            await self._listener.close()
            self._listener = None

    @property
    def peer_address(self) -> tuple[str, int] | None:
        return None if self._listener is None else self._listener.sockname
