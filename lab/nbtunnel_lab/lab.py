"""The Lab: edge, connectors, origin and vantage points on 127.0.0.1, driven from one object.

Everything asyncio runs on the lab's own thread and loop (a notebook's kernel loop stalls
during blocking cells); mitmproxy runs on a second thread (see ``mitm.py``). Public methods
are synchronous and thread-safe, so a notebook cell or a plain test can call them directly.
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
from types import TracebackType
from typing import Any, TypeVar

from nbtunnel.apiclient import ApiClient, Login
from nbtunnel.connector.events import ConnectionEvent, TunnelEvent
from nbtunnel.connector.hello import HelloWorldServer
from nbtunnel.connector.ingress import Ingress
from nbtunnel.connector.metrics import MetricsServer
from nbtunnel.connector.quick import QuickTunnel, request_quick_tunnel
from nbtunnel.connector.supervisor import Connector, ConnectorConfig
from nbtunnel.credentials import Credentials
from nbtunnel.edge.bootstrap import ensure_admin_token
from nbtunnel.edge.server import Edge, EdgeConfig
from nbtunnel_lab.client import LabResponse, http_request
from nbtunnel_lab.faults import Fault, FaultError, FaultSet, make_fault
from nbtunnel_lab.mitm import MitmVantages
from nbtunnel_lab.records import FlowTable, Record, RecordStore, now
from nbtunnel_lab.relay import QuicRelay
from nbtunnel_lab.sequence import SequenceDiagram, pick_ray
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


@dataclass
class LabConnector:
    """A connector added with ``Lab.add_connector`` (a named tunnel's), and its metrics server."""

    connector: Connector
    metrics: MetricsServer

    @property
    def metrics_url(self) -> str:
        return "http://{}:{}".format(*self.metrics.sockname)

    def get(self, path: str = "/config") -> Any:
        """GET a metrics-server endpoint (``/config``, ``/ready``, ``/diag/tunnel``) as JSON."""
        import json
        import urllib.request

        with urllib.request.urlopen(self.metrics_url + path, timeout=10) as resp:
            return json.loads(resp.read())


class Lab:
    """``with Lab() as lab:`` starts it all; ``lab.stop()`` leaves no thread, task or port."""

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

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

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

    # observations ------------------------------------------------------------------------

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

    def connection_events(self, state: str | None = None) -> list[ConnectionEvent]:
        return [e for e in list(self.events) if isinstance(e, ConnectionEvent)
                and state in (None, e.state)]

    def flows(self, **match: object) -> FlowTable:
        """Every record so far (optionally filtered, e.g. ``vantage="tunnel"``)."""
        return FlowTable(self.store.snapshot(), self.started).where(**match)

    def sequence(self, ray_or_index: str | int = -1) -> SequenceDiagram:
        """One request's life across the vantage points (by Cf-Ray, or the n-th request)."""
        records = self.store.snapshot()
        ray = pick_ray(records, ray_or_index)
        return SequenceDiagram(ray, [r for r in records if r.ray == ray])

    # driving it -------------------------------------------------------------------------------

    @property
    def hostname(self) -> str:
        if self.quick is None:
            raise LabError("the lab is not running")
        return self.quick.hostname

    @property
    def public_address(self) -> tuple[str, int]:
        """Where public requests go: the public vantage point if on, else the edge's front."""
        if self._mitm is not None and "public" in self._mitm.addresses:
            return self._mitm.addresses["public"]
        if self.edge is None:
            raise LabError("the lab is not running")
        return self.edge.public_address

    @property
    def url(self) -> str:
        return f"http://{self.hostname}:{self.public_address[1]}"

    @property
    def origin_service(self) -> str:
        """The origin as connectors should reach it (through the origin vantage point if on)."""
        if self._mitm is not None and "origin" in self._mitm.addresses:
            return "http://{}:{}".format(*self._mitm.addresses["origin"])
        return self.origin_url

    def request(self, path: str = "/", method: str = "GET", body: bytes = b"",
                headers: dict[str, str] | None = None, timeout: float = 30.0,
                host: str | None = None) -> LabResponse:
        """A public request through the lab, timed; ``host`` defaults to the quick tunnel's."""
        return http_request(self.public_address, host or self.hostname, path, method, body,
                            headers or {}, timeout)

    def api(self) -> ApiClient:
        """A client for the edge's ``/api/v1`` with the admin token of the account ``default``."""
        if self._api is None:
            edge = self.edge
            if edge is None or edge.store is None or self._state_dir is None:
                raise LabError("the lab is not running")
            store, state = edge.store, self._state_dir / "edge"

            async def token() -> str:
                path, new = ensure_admin_token(store, state)
                return new or path.read_text().strip()

            self._api = ApiClient(Login(edge.api_url, self._call(token())))
        return self._api

    def add_connector(self, token: str | Credentials, ingress: Ingress | None = None,
                      ha_connections: int = 1) -> LabConnector:
        """Run one more connector (e.g. a named tunnel's, from its token) through the lab.

        Without ``ingress`` it answers 503 until the edge pushes a remote configuration.
        It gets a metrics server on 127.0.0.1 (``/config``, ``/ready``...); ``stop()`` ends both.
        """
        creds = Credentials.from_token(token) if isinstance(token, str) else token
        rules = ingress or Ingress.single("http_status:503")

        async def up() -> LabConnector:
            connector = Connector(self._connector_config(creds, rules, ha_connections))
            connector.subscribe(self._on_event)
            metrics = MetricsServer(connector)
            await metrics.start("127.0.0.1", 0)
            self._metrics.append(metrics)
            self.connectors.append(connector)
            self._tasks.append(asyncio.get_running_loop().create_task(connector.run()))
            async with asyncio.timeout(30):
                await connector.wait_ready(ha_connections)
            return LabConnector(connector, metrics)

        if self.edge is None or self.shim is None:
            raise LabError("the lab is not running")
        return self._call(up())

    def inject(self, kind: str, **params: Any) -> Fault:
        """delay / throttle / drop / reset / close / blackhole; see docs/lab.md."""
        fault = make_fault(kind, **params)
        if kind != "blackhole" and self.relay is None:
            raise FaultError(f"{kind} needs the tunnel vantage point (LabConfig(tunnel=True))")
        self._note(f"inject {kind} " + ", ".join(
            f"{k}={v}" for k, v in params.items()), fault=fault.id)
        relay = self.relay
        if kind == "close":
            assert relay is not None
            fault.hits = self._call(self._on_loop(lambda: relay.close_connection(
                fault.conn_index)))
            return fault
        if kind == "reset" and fault.stream_id is not None:
            assert relay is not None
            if self._call(self._on_loop(lambda: relay.reset_stream(fault))):
                return fault
        return self.faults.add(fault)

    def clear_faults(self) -> None:
        self.faults.clear()

    @staticmethod
    async def _on_loop(fn: Any) -> Any:
        return fn()

    # what runs where ---------------------------------------------------------------------------

    def where(self) -> list[tuple[str, str]]:
        rows = [("origin", self.origin_url)]
        if self.edge is not None:
            rows += [("edge public front", "http://{}:{}".format(*self.edge.public_address)),
                     ("edge QUIC (connectors)", "udp {}:{}".format(*self.edge.quic_address))]
        if self._mitm is not None:
            for name, addr in self._mitm.addresses.items():
                rows.append((f"mitmproxy {name} side", "http://{}:{}".format(*addr)))
        if self.relay is not None:
            rows.append(("tunnel-side QUIC relay", "udp {}:{} (CA {})".format(
                *self.relay.address, self.relay.ca_path)))
        if self.shim is not None:
            rows.append(("UDP shim (blackhole)", "udp {}:{}".format(*self.shim.address)))
        rows += [(f"connector {i}", f"{c.ready_connections} registered connections")
                 for i, c in enumerate(self.connectors)]
        if self.quick is not None:
            rows.append(("public URL", self.url))
        return rows

    def __str__(self) -> str:
        rows = self.where()
        width = max((len(k) for k, _ in rows), default=0)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)

    def _repr_html_(self) -> str:
        import html

        cells = "".join(f"<tr><td>{html.escape(k)}</td><td><code>{html.escape(v)}</code></td>"
                        f"</tr>" for k, v in self.where())
        return f"<table class='nbtunnel-lab'><tbody>{cells}</tbody></table>"
