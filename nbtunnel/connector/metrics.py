"""The connector's metrics and readiness server (`--metrics ADDR`), as cloudflared's.

`/ready` is what orchestrators and `cloudflared tunnel ready` poll; `/metrics` uses
cloudflared's metric names so existing dashboards and alerts keep working. Counters are fed by
the connector's events (observers only record, they never block the loop).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter

from aiohttp import web

from nbtunnel import __version__
from nbtunnel.connector.events import ConnectionEvent, RequestEvent, TunnelEvent
from nbtunnel.connector.supervisor import Connector

log = logging.getLogger("nbtunnel.connector.metrics")


class MetricsCollector:
    """Counts what the connector reports; rendered as Prometheus text on demand."""

    def __init__(self) -> None:
        self.total_requests = 0
        self.request_errors = 0
        self.by_code: Counter[int] = Counter()
        self.register_success = 0
        self.locations: dict[int, tuple[str, str]] = {}  # index -> (connection id, location)
        self.started = time.time()

    def __call__(self, event: TunnelEvent) -> None:
        if isinstance(event, RequestEvent):
            self.total_requests += 1
            if event.error:
                self.request_errors += 1
            else:
                self.by_code[event.status] += 1
        elif isinstance(event, ConnectionEvent) and event.state == "registered":
            self.register_success += 1
            self.locations[event.conn_index] = (event.connection_id, event.location)
        elif isinstance(event, ConnectionEvent) and event.state in ("closed", "reconnecting"):
            self.locations.pop(event.conn_index, None)


def _family(out: list[str], name: str, kind: str, help_: str,
            samples: list[tuple[str, float]]) -> None:
    out.append(f"# HELP {name} {help_}")
    out.append(f"# TYPE {name} {kind}")
    out.extend(f"{name}{labels} {value:g}" for labels, value in samples)


def render_metrics(connector: Connector, m: MetricsCollector) -> str:
    out: list[str] = []
    in_flight = sum(c.in_flight for c in connector.connections.values())
    _family(out, "build_info", "gauge", "Build and version information",
            [(f'{{goversion="",revision="",type="nbtunnel",version="{__version__}"}}', 1)])
    _family(out, "cloudflared_config_local_config_pushes", "counter",
            "Number of local configuration pushes to the edge",
            [("", connector.local_config_pushes)])
    _family(out, "cloudflared_orchestration_config_version", "gauge", "Configuration Version",
            [("", max(connector.config_version, 0))])
    _family(out, "cloudflared_tunnel_ha_connections", "gauge",
            "Number of active ha connections", [("", connector.ready_connections)])
    _family(out, "cloudflared_tunnel_total_requests", "counter",
            "Amount of requests proxied through all the tunnels", [("", m.total_requests)])
    _family(out, "cloudflared_tunnel_request_errors", "counter",
            "Amount of requests errors", [("", m.request_errors)])
    _family(out, "cloudflared_tunnel_response_by_code", "counter",
            "Count of responses by HTTP status code",
            [(f'{{status_code="{code}"}}', n) for code, n in sorted(m.by_code.items())])
    _family(out, "cloudflared_tunnel_concurrent_requests_per_tunnel", "gauge",
            "Concurrent requests proxied through each tunnel", [("", in_flight)])
    _family(out, "cloudflared_tunnel_server_locations", "gauge",
            "Where each tunnel is connected to. 1 means current location, 0 means previous "
            "locations.",
            [(f'{{connection_id="{i}",edge_location="{loc}"}}', 1)
             for i, (_, loc) in sorted(m.locations.items())])
    _family(out, "cloudflared_tunnel_tunnel_register_success", "counter",
            "Count of successful tunnel registrations",
            [('{rpcName="registerConnection"}', m.register_success)])
    for name, kind in (("cloudflared_tcp_active_sessions", "gauge"),
                       ("cloudflared_tcp_total_sessions", "counter"),
                       ("cloudflared_udp_active_sessions", "gauge"),
                       ("cloudflared_udp_total_sessions", "counter")):
        _family(out, name, kind, "TCP/UDP sessions proxied (not supported: always 0)",
                [("", 0)])
    _family(out, "process_start_time_seconds", "gauge",
            "Start time of the process since unix epoch in seconds.", [("", m.started)])
    return "\n".join(out) + "\n"


class MetricsServer:
    """aiohttp app on ADDR; `start()` then `close()` (owned by the command that runs it)."""

    def __init__(self, connector: Connector, *, quick_hostname: str = "") -> None:
        self.connector = connector
        self.quick_hostname = quick_hostname
        self.collector = MetricsCollector()
        connector.subscribe(self.collector)
        app = web.Application()
        app.router.add_get("/ready", self.ready)
        app.router.add_get("/healthcheck", self.healthcheck)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/quicktunnel", self.quicktunnel)
        app.router.add_get("/config", self.config)
        app.router.add_get("/diag/tunnel", self.diag_tunnel)
        self._runner = web.AppRunner(app, access_log=None)
        self._site: web.TCPSite | None = None

    async def start(self, host: str, port: int) -> None:
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, host, port)
        await self._site.start()
        h, p = self.sockname
        log.info("Starting metrics server on %s:%d/metrics", h, p)

    @property
    def sockname(self) -> tuple[str, int]:
        assert self._site is not None and self._site._server is not None
        name = self._site._server.sockets[0].getsockname()  # type: ignore[attr-defined]
        return name[0], name[1]

    async def close(self) -> None:
        await self._runner.cleanup()

    async def ready(self, _: web.Request) -> web.Response:
        n = self.connector.ready_connections
        status = 200 if n > 0 else 503
        body = {"status": status, "readyConnections": n,
                "connectorId": str(self.connector.connector_id)}
        return web.Response(status=status, text=json.dumps(body, separators=(",", ":")),
                            content_type="application/json")

    async def healthcheck(self, _: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def metrics(self, _: web.Request) -> web.Response:
        text = render_metrics(self.connector, self.collector)
        return web.Response(text=text, content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    async def quicktunnel(self, _: web.Request) -> web.Response:
        return web.json_response({"hostname": self.quick_hostname})

    async def config(self, _: web.Request) -> web.Response:
        c = self.connector
        doc = {"version": c.config_version,
               "config": {"ingress": c.ingress.to_json_rules(),
                          "warp-routing": c.ingress.warp_routing.to_json(),
                          "originRequest": c.ingress.defaults}}
        return web.json_response(doc)

    async def diag_tunnel(self, _: web.Request) -> web.Response:
        c = self.connector
        conns = [{"isConnected": e.registered.is_set() and e.conn is not None
                  and not e.conn.closed, "protocol": 1, "edgeAddress": e.target.host}
                 for _, e in sorted(c.connections.items())]
        return web.json_response({"tunnelID": str(c.config.credentials.tunnel_id),
                                  "connectorID": str(c.connector_id), "connections": conns,
                                  "icmp_sources": []})
