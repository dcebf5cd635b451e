"""The lab's machinery: bring edge, relay, UDP shim, mitmproxy and connectors up and down.

``Lab`` (``lab.py``) inherits this and adds what a notebook drives and looks at, so each
module stays readable. Everything asyncio runs on the lab's own thread and loop (a notebook's
kernel loop stalls during blocking cells); mitmproxy runs on a second thread (``mitm.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import tempfile
import threading
from collections.abc import Coroutine
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from nbtunnel.cli.apiclient import ApiClient
from nbtunnel.connector.events import ConnectionEvent, TunnelEvent
from nbtunnel.connector.hello import HelloWorldServer
from nbtunnel.connector.ingress import Ingress
from nbtunnel.connector.metrics import MetricsServer
from nbtunnel.connector.quick import QuickTunnel, request_quick_tunnel
from nbtunnel.connector.supervisor import Connector, ConnectorConfig
from nbtunnel.core.credentials import Credentials
from nbtunnel.edge.server import Edge, EdgeConfig
from nbtunnel_lab.faults import FaultSet
from nbtunnel_lab.mitm import MitmVantages
from nbtunnel_lab.records import Record, RecordStore, now
from nbtunnel_lab.relay import QuicRelay
from nbtunnel_lab.udpshim import UdpShim

T = TypeVar("T")


class LabError(RuntimeError):
    """The lab could not start, or an operation needs a part of it that is off."""


@dataclass
class LabConfig:
    """What to run. ``origin=None`` serves the built-in hello world."""

    origin: str | None = None
    connectors: int = 1
    ha_connections: int = 2
    public: bool = True  # mitmproxy in front of the edge's public front
    tunnel: bool = True  # the lab's QUIC relay between connector and edge
    origin_side: bool = True  # mitmproxy between connector and origin
    state_dir: Path | None = None  # None: a temporary directory, removed by stop()
    quic_backend: str | None = None
    grace_period: float = 2.0
    start_timeout: float = 60.0


class LabCore:
    """The parts, their loop thread, start/stop; use ``Lab``, which adds what you drive."""

    def __init__(self, config: LabConfig | None = None, **overrides: Any) -> None:
        self.config = config or LabConfig(**overrides)
        self.store = RecordStore()
        self.faults = FaultSet()
        self.events: list[TunnelEvent] = []
        self.edge: Edge | None = None
        self.relay: QuicRelay | None = None
        self.shim: UdpShim | None = None
        self.quick: QuickTunnel | None = None
        self.connectors: list[Connector] = []
        self.origin_url = ""
        self._hello: HelloWorldServer | None = None
        self._mitm: MitmVantages | None = None
        self._metrics: list[MetricsServer] = []
        self._api: ApiClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._state_dir: Path | None = None
        self._owns_state = False
        self.started = 0.0

    # lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise LabError("this lab is already running")
        cfg = self.config
        self._owns_state = cfg.state_dir is None
        self._state_dir = Path(tempfile.mkdtemp(prefix="nbtunnel-lab-")) if cfg.state_dir is None \
            else Path(cfg.state_dir)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="nbtunnel-lab",
                                        daemon=True)
        self._thread.start()
        self.started = now()
        try:
            self._call(self._up_core())
            if cfg.public or cfg.origin_side:
                assert self.edge is not None
                upstreams = {}
                if cfg.public:
                    upstreams["public"] = self.edge.api_url
                if cfg.origin_side:
                    upstreams["origin"] = self.origin_url
                self._mitm = MitmVantages(upstreams, self.store, self._state_dir / "mitmproxy")
                self._mitm.start()
            self._call(self._up_connectors())
        except BaseException as exc:
            self.stop()
            if isinstance(exc, LabError):
                raise
            raise LabError(f"the lab did not start: {type(exc).__name__}: {exc}") from exc

    def stop(self) -> None:
        """Graceful: connectors unregister, then everything closes in reverse order."""
        if self._loop is None:
            return
        try:
            self._call(self._down(), timeout=60)
        finally:
            if self._mitm is not None:
                self._mitm.stop()
                self._mitm = None
            loop = self._loop
            self._call(loop.shutdown_default_executor(), timeout=10)
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            loop.close()
            self._loop = None
            self._thread = None
            if self._owns_state and self._state_dir is not None:
                shutil.rmtree(self._state_dir, ignore_errors=True)

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the lab loop from any other thread and wait for it."""
        assert self._loop is not None
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        limit = timeout or self.config.start_timeout
        try:
            return fut.result(limit)
        except concurrent.futures.TimeoutError as exc:
            if fut.done():
                raise  # the coroutine's own timeout, not ours
            fut.cancel()
            raise LabError(f"lab operation timed out after {limit}s") from exc

    async def _up_core(self) -> None:
        assert self._state_dir is not None
        cfg = self.config
        if cfg.origin is None:
            self._hello = HelloWorldServer()
            await self._hello.start()
            self.origin_url = self._hello.url
        else:
            self.origin_url = cfg.origin
        self.edge = Edge(EdgeConfig(state_dir=self._state_dir / "edge", quic_port=0,
                                    http_port=0, quic_backend=cfg.quic_backend))
        await self.edge.start()

    async def _up_connectors(self) -> None:
        assert self.edge is not None and self._state_dir is not None
        cfg = self.config
        target = self.edge.quic_address
        if cfg.tunnel:
            self.relay = QuicRelay(self.edge.quic_address, str(self.edge.ca_path),
                                   self._state_dir / "relay-ca", self.store, self.faults)
            await self.relay.start()
            target = self.relay.address
        self.shim = UdpShim(target, self.faults)
        await self.shim.start()
        self.quick = await request_quick_tunnel(self.edge.api_url)
        service = self.origin_service
        for _ in range(cfg.connectors):
            connector = Connector(self._connector_config(
                self.quick.credentials, Ingress.single(service), cfg.ha_connections))
            connector.subscribe(self._on_event)
            self.connectors.append(connector)
            self._tasks.append(asyncio.get_running_loop().create_task(connector.run()))
        async with asyncio.timeout(30):
            for connector in self.connectors:
                await connector.wait_ready(cfg.ha_connections)

    def _connector_config(self, credentials: Credentials, ingress: Ingress,
                          ha_connections: int) -> ConnectorConfig:
        """Connectors dial the UDP shim (then the relay if on), so every vantage point sees them."""
        assert self.edge is not None and self.shim is not None
        cacert = str(self.relay.ca_path if self.relay is not None else self.edge.ca_path)
        return ConnectorConfig(edge=[self.shim.address], credentials=credentials,
                               ingress=ingress, cacert=cacert, ha_connections=ha_connections,
                               grace_period=self.config.grace_period,
                               quic_backend=self.config.quic_backend)

    async def _down(self) -> None:
        for metrics in self._metrics:
            await metrics.close()
        self._metrics.clear()
        await asyncio.gather(*(c.shutdown(self.config.grace_period) for c in self.connectors),
                             return_exceptions=True)
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, self.config.grace_period + 10)
            except (TimeoutError, asyncio.CancelledError):
                pass
            except Exception as exc:  # a connector that crashed: shown, not fatal to stop()
                self._note(f"connector task ended with {type(exc).__name__}: {exc}")
        self._tasks.clear()
        for closer in (self.shim, self.relay, self.edge):
            if closer is not None:
                await closer.close()
        if self._hello is not None:
            await self._hello.stop()

    # connector events -> records ---------------------------------------------------------

    def _on_event(self, event: TunnelEvent) -> None:
        self.events.append(event)
        if isinstance(event, ConnectionEvent):
            summary = f"conn {event.conn_index} {event.state}"
            summary += f" ({event.detail})" if event.detail else ""
            summary += f", retry in {event.delay:.1f}s" if event.delay else ""
            self.store.add(Record("connector", now(), "event", summary, "",
                                  conn_index=event.conn_index, kind=event.state,
                                  fields=asdict(event)))
        else:
            self.store.add(Record("connector", now(), "data",
                                  f"{event.method} {event.path} -> {event.status} "
                                  f"in {event.duration * 1000:.0f} ms", "",
                                  conn_index=event.conn_index, kind="request",
                                  fields=asdict(event)))

    def _note(self, summary: str, **fields: object) -> None:
        self.store.add(Record("lab", now(), "event", summary, kind="note", fields=fields))

    @property
    def origin_service(self) -> str:
        """The origin as connectors should reach it (through the origin vantage point if on)."""
        if self._mitm is not None and "origin" in self._mitm.addresses:
            return "http://{}:{}".format(*self._mitm.addresses["origin"])
        return self.origin_url
