"""The edge as one object: connector listener, control plane, store and public front.

`async with Edge(EdgeConfig(...)) as edge:` starts everything on loopback by default and
closes it all on exit. The CLI (`nbtunnel edge`) and the connector's embedded mode both use it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from nbtunnel.core.http1 import http_url
from nbtunnel.edge.api import EdgeApi
from nbtunnel.edge.certs import CertStore
from nbtunnel.edge.clock import Clock
from nbtunnel.edge.cluster import Cluster, ClusterConfig, default_edge_id
from nbtunnel.edge.control import REGISTRATION_TIMEOUT, ControlHandler
from nbtunnel.edge.front import PublicFront
from nbtunnel.edge.https_front import HttpsFront
from nbtunnel.edge.limits import FrontLimits
from nbtunnel.edge.metrics import MetricsServer
from nbtunnel.edge.quick_expiry import QUICK_TUNNEL_IDLE_EXPIRY, QuickTunnelExpiry
from nbtunnel.edge.ratelimit import RateLimiter
from nbtunnel.edge.registry import LiveConnection, Registry
from nbtunnel.edge.rest_api import ControlApi
from nbtunnel.edge.state_files import private_dir
from nbtunnel.edge.stores import ControlStore, open_store
from nbtunnel.home import default_home
from nbtunnel.transport.http2 import H2Listener
from nbtunnel.transport.quic import QuicServer, QuicSettings, serve
from nbtunnel.transport.tls import LocalCA

log = logging.getLogger("nbtunnel.edge")

DRAIN_TIMEOUT = 30.0  # SIGTERM: how long in-flight requests may take before the edge closes


@dataclass
class EdgeConfig:
    """Where the edge listens and keeps its state."""

    state_dir: Path = field(default_factory=lambda: default_home() / "edge")
    quic_host: str = "127.0.0.1"
    quic_port: int = 7844
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    domain: str = "localhost"
    location: str = "LOC"
    api_hosts: tuple[str, ...] = ()
    quic_backend: str | None = None
    registration_timeout: float = REGISTRATION_TIMEOUT
    quick_tunnels_per_minute: float = 10.0  # per client address; 0: no limit
    quick_tunnel_burst: int = 20
    quick_tunnel_idle_expiry: float = QUICK_TUNNEL_IDLE_EXPIRY  # seconds; 0: never
    clock: Clock = field(default_factory=Clock)  # tests inject a clock they advance by hand
    store: str | None = None
    """`--store`: None = SQLite in the state directory; `postgresql://...` = shared."""
    presence: str | None = None
    """`--presence`: None = a single edge; `redis://...` = one of several (cluster.py)."""
    edge_id: str | None = None
    peer_host: str = "127.0.0.1"
    peer_port: int = 0
    peer_advertise: str | None = None
    peer_secret: bytes | None = None
    # the HTTPS front: off unless https_port is set (0 = any free port); certificate files as
    # (cert, key) pairs, else the local CA issues one per hostname
    https_host: str = "127.0.0.1"
    https_port: int | None = None
    https_certs: list[tuple[Path, Path]] = field(default_factory=list)
    https_redirect: bool = False
    tls_handshake_timeout: float = 10.0
    """TLS handshake deadline on the HTTP/2 connector port (TCP)."""
    front: FrontLimits = field(default_factory=FrontLimits)
    """Deadlines and size limits of the public front (see docs/refusals.md)."""
    reuse_port: bool = False
    """SO_REUSEPORT on the connector and public ports (`nbtunnel edge --workers N`)."""
    metrics: tuple[str, int] | None = None
    """`--metrics HOST:PORT`: Prometheus `/metrics` (edge/metrics.py); None: off."""


class Edge:
    """A running local edge (see module docstring)."""

    def __init__(self, config: EdgeConfig | None = None) -> None:
        self.config = config or EdgeConfig()
        self.store: ControlStore | None = None
        self.registry = Registry(self.config.clock)
        self.ca: LocalCA | None = None
        self.front: PublicFront | None = None
        self.https: HttpsFront | None = None
        self._quic: QuicServer | None = None
        self._h2: H2Listener | None = None
        self.control_api: ControlApi | None = None
        self.metrics: MetricsServer | None = None
        self.quick_expiry: QuickTunnelExpiry | None = None
        self._expiry_task: asyncio.Task[None] | None = None
        cfg = self.config
        self.cluster = Cluster(ClusterConfig(
            cfg.presence, cfg.edge_id or default_edge_id(cfg.location), cfg.location,
            cfg.peer_host, cfg.peer_port, cfg.peer_advertise, cfg.peer_secret,
            cfg.quic_backend), self.registry)

    async def start(self) -> None:
        cfg = self.config
        private_dir(cfg.state_dir)  # secrets live here: owner-only
        self.ca = LocalCA.load_or_create(cfg.state_dir)
        self.store = open_store(cfg.store, cfg.state_dir, clock=cfg.clock)
        try:
            await self.store.start()
        except BaseException:
            self.store = None
            raise
        self.control_api = ControlApi(self.store, self.registry, domain=cfg.domain)
        control_api, cluster = self.control_api, self.cluster

        def on_change(state: str, live: LiveConnection) -> None:
            control_api.on_connection_change(state, live)
            cluster.connection_changed(state, live)

        control = ControlHandler(self.store, self.registry, location=cfg.location,
                                 on_change=on_change,
                                 registration_timeout=cfg.registration_timeout, clock=cfg.clock)
        api_hosts = frozenset(
            {"127.0.0.1", "localhost", "::1", f"api.{cfg.domain}", *cfg.api_hosts}
        )
        api = EdgeApi(self.store, domain=cfg.domain, ca_pem=self.ca.ca_path.read_bytes(),
                      control=self.control_api, clock=cfg.clock,
                      quick_limiter=RateLimiter(cfg.quick_tunnels_per_minute / 60,
                                                cfg.quick_tunnel_burst))
        try:
            await self.cluster.start(self.control_api, self.ca)
            await self._listen_for_connectors(control)
            self.front = PublicFront(
                self.store, self.registry, location=cfg.location, api=api, api_hosts=api_hosts,
                limits=cfg.front, clock=cfg.clock,
            )
            try:
                await self.front.start(cfg.http_host, cfg.http_port, reuse_port=cfg.reuse_port)
            except OSError as exc:
                raise _naming(exc, "public front (--http) on tcp", cfg.http_host,
                              cfg.http_port) from exc
            if cfg.quick_tunnel_idle_expiry > 0:
                self.quick_expiry = QuickTunnelExpiry(
                    self.store, self.registry, idle=cfg.quick_tunnel_idle_expiry,
                    clock=cfg.clock, presence=self.cluster.presence)
                self._expiry_task = asyncio.get_running_loop().create_task(
                    self.quick_expiry.run(), name="quick tunnel expiry")
            self.front.remote = self.cluster.client
            api.edge_id, api.location = self.cluster.edge_id, cfg.location
            self.cluster.front_address = self.front.sockname
            if cfg.https_port is not None:
                await self._start_https(self.front, api_hosts)
            if cfg.metrics is not None:
                self.metrics = MetricsServer(self)
                await self.metrics.start(*cfg.metrics)
            await self.cluster.presence.announce()
        except BaseException:
            await self.close()
            raise
        log.info("edge listening: connectors on udp+tcp %s:%d, public front on http://%s:%d",
                 *self.quic_address, *self.public_address)

    async def _listen_for_connectors(self, control: ControlHandler) -> None:
        """QUIC on UDP and cloudflared's HTTP/2 on TCP at the same port number.

        With an ephemeral port the TCP listener is bound first and the UDP one on its number;
        if that number is taken on UDP both are dropped and another one is tried, so the edge
        never ends up serving QUIC only by chance.
        """
        cfg = self.config
        assert self.ca is not None
        certfile, keyfile = str(self.ca.cert_path), str(self.ca.key_path)
        settings = QuicSettings(idle_timeout=10.0, backend=cfg.quic_backend,
                                reuse_port=cfg.reuse_port)
        attempts = 20 if cfg.quic_port == 0 else 1
        for attempt in range(attempts):
            listener = H2Listener(control.serve)
            h2: H2Listener | None = listener
            try:
                await listener.start(cfg.quic_host, cfg.quic_port, certfile, keyfile,
                                     reuse_port=cfg.reuse_port,
                                     tls_timeout=cfg.tls_handshake_timeout)
            except OSError as exc:  # QUIC still serves; only `--protocol http2` is affected
                log.warning("no HTTP/2 connector listener on tcp port %d: %s",
                            cfg.quic_port, exc)
                h2 = None
            port = h2.sockname[1] if h2 is not None else cfg.quic_port
            try:
                self._quic = await serve(cfg.quic_host, port, certfile=certfile,
                                         keyfile=keyfile, on_connection=control.serve,
                                         settings=settings)
            except OSError as exc:
                if h2 is not None:
                    await h2.close()
                if attempt + 1 == attempts:
                    raise _naming(exc, "connector listener (--listen) on udp", cfg.quic_host,
                                  port) from exc
                continue
            self._h2 = h2
            return

    async def _start_https(self, front: PublicFront, api_hosts: frozenset[str]) -> None:
        cfg = self.config
        domain = cfg.domain.lower()

        def may_issue(name: str) -> bool:
            return (name == domain or name.endswith("." + domain) or name in api_hosts
                    or (self.store is not None and self.store.resolve(name) is not None))

        certs = CertStore(cfg.https_certs, ca=None if cfg.https_certs else self.ca,
                          may_issue=may_issue)
        self.https = HttpsFront(front, certs)
        try:
            await self.https.start(cfg.https_host, cfg.https_port or 0)
        except OSError as exc:
            certs.close()
            self.https = None
            raise _naming(exc, "HTTPS front (--https) on tcp", cfg.https_host,
                          cfg.https_port or 0) from exc
        except BaseException:
            certs.close()
            self.https = None
            raise
        if cfg.https_redirect:
            self.https.enable_redirect()

    def reload_certificates(self) -> None:
        """SIGHUP: re-read the HTTPS certificate files (open connections are kept)."""
        if self.https is not None:
            self.https.certs.reload()

    async def drain(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Graceful stop of one edge among several (SIGTERM): its connectors move to the other
        edges before `close()` (see Cluster.drain). A single edge has nowhere to send them."""
        if self.cluster.presence.shared:
            left = await self.cluster.drain(timeout)
            if left:
                log.warning("draining: %d connection(s) still busy after %.0fs; closing them",
                            left, timeout)

    async def close(self) -> None:
        if self.metrics is not None:
            await self.metrics.close()
            self.metrics = None
        if self._expiry_task is not None:
            task, self._expiry_task = self._expiry_task, None
            task.cancel()
            await asyncio.wait([task])  # our own cancellation still propagates
            if not task.cancelled() and task.exception() is not None:
                log.error("quick-tunnel expiry failed", exc_info=task.exception())
        if self.https is not None:
            await self.https.close()
            self.https = None
        if self.front is not None:
            await self.front.close()
            self.front = None
        if self._quic is not None:
            await self._quic.close()
            self._quic = None
        if self._h2 is not None:
            await self._h2.close()
            self._h2 = None
        await self.cluster.close()
        if self.control_api is not None:
            await self.control_api.aclose()
            self.control_api = None
        if self.store is not None:
            await self.store.aclose()
            self.store = None

    async def __aenter__(self) -> Edge:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def quic_address(self) -> tuple[str, int]:
        assert self._quic is not None
        return self._quic.sockname

    @property
    def http2_address(self) -> tuple[str, int] | None:
        """TCP address of the HTTP/2 connector listener (None if its port was taken)."""
        return None if self._h2 is None else self.quic_address

    @property
    def public_address(self) -> tuple[str, int]:
        assert self.front is not None
        return self.front.sockname

    @property
    def api_url(self) -> str:
        host, port = self.public_address
        return f"http://{host}:{port}"

    def public_url(self, hostname: str) -> str:
        return http_url(hostname, self.public_address[1])

    @property
    def https_address(self) -> tuple[str, int] | None:
        return self.https.sockname if self.https is not None else None

    def https_url(self, hostname: str) -> str | None:
        if self.https is None:
            return None
        port = self.https.sockname[1]
        return f"https://{hostname}" + ("" if port == 443 else f":{port}")

    @property
    def ca_path(self) -> Path:
        assert self.ca is not None
        return self.ca.ca_path


def _naming(exc: OSError, what: str, host: str, port: int) -> OSError:
    """The same error (errno kept: callers fall back on EADDRINUSE) naming what failed to bind,
    so `cannot start the edge` says which address is taken."""
    why = os.strerror(exc.errno) if exc.errno else str(exc)
    return OSError(exc.errno, f"{why}: {what} {host}:{port}")
