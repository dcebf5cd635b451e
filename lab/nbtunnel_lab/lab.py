"""The Lab: edge, connectors, origin and vantage points on 127.0.0.1, driven from one object.

Starting and stopping the parts lives in ``labcore.py``; this module is what a notebook uses:
requests, faults, extra connectors and views. Public methods are synchronous and thread-safe,
so a notebook cell or a plain test can call them directly.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from nbtunnel.cli.apiclient import ApiClient, Login
from nbtunnel.connector.events import ConnectionEvent
from nbtunnel.connector.ingress import Ingress
from nbtunnel.connector.metrics import MetricsServer
from nbtunnel.connector.supervisor import Connector
from nbtunnel.core.credentials import Credentials
from nbtunnel.edge.bootstrap import ensure_admin_token
from nbtunnel_lab.client import LabResponse, http_request
from nbtunnel_lab.faults import Fault, FaultError, make_fault
from nbtunnel_lab.labcore import LabConfig as LabConfig  # re-exported: the lab's import path
from nbtunnel_lab.labcore import LabCore, LabError
from nbtunnel_lab.records import FlowTable
from nbtunnel_lab.sequence import SequenceDiagram, pick_ray


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


class Lab(LabCore):
    """``with Lab() as lab:`` starts it all; ``lab.stop()`` leaves no thread, task or port."""

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # observations ------------------------------------------------------------------------

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
                path, new = await ensure_admin_token(store, state)
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
