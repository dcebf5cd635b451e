"""Prometheus metrics of one edge (`nbtunnel edge --metrics HOST:PORT`, path `/metrics`).

Names live in the `nbtunnel_edge_` namespace and every series carries no label an attacker
controls (statuses are numbers the edge chose, protocols a fixed set). With `--workers N` each
worker listens on PORT + its index, so a scraper sees every process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from nbtunnel.edge.server import Edge


def _line(name: str, value: float, labels: dict[str, str] | None = None) -> str:
    if labels:
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        return f"nbtunnel_edge_{name}{{{inner}}} {value:g}"
    return f"nbtunnel_edge_{name} {value:g}"


def render(edge: Edge) -> str:
    """The text exposition format for everything the edge counts."""
    out: list[str] = []

    def head(name: str, kind: str, text: str) -> None:
        out.append(f"# HELP nbtunnel_edge_{name} {text}")
        out.append(f"# TYPE nbtunnel_edge_{name} {kind}")

    cluster = edge.cluster
    head("info", "gauge", "This edge's identity.")
    out.append(_line("info", 1, {"edge_id": cluster.edge_id, "location": edge.config.location}))
    conns = edge.registry.connections()
    head("connections", "gauge", "Registered connector connections, by transport.")
    by_protocol: dict[str, int] = {"quic": 0, "http2": 0}
    for conn in conns:
        by_protocol[conn.protocol] = by_protocol.get(conn.protocol, 0) + 1
    for protocol, n in sorted(by_protocol.items()):
        out.append(_line("connections", n, {"protocol": protocol}))
    head("tunnels", "gauge", "Tunnels with at least one connection on this edge.")
    out.append(_line("tunnels", len({c.tunnel_id for c in conns})))
    head("requests_total", "counter", "Requests answered by the public front, by status.")
    statuses = edge.front.statuses if edge.front is not None else {}
    for status, n in sorted(statuses.items()):
        out.append(_line("requests_total", n, {"status": str(status)}))
    head("forwarded_requests_total", "counter",
         "Requests forwarded to the edge holding the tunnel.")
    out.append(_line("forwarded_requests_total",
                     cluster.client.forwarded if cluster.client else 0))
    head("relayed_requests_total", "counter",
         "Requests other edges forwarded here, handed to a local connection.")
    out.append(_line("relayed_requests_total", cluster.server.relayed if cluster.server else 0))
    if edge.store is not None:
        lat = edge.store.latency
        backend = {"backend": edge.store.backend}
        head("store_latency_seconds", "histogram", "Control-plane store calls.")
        for bound, n in lat.buckets.items():
            out.append(_line("store_latency_seconds_bucket", n, {**backend, "le": f"{bound:g}"}))
        out.append(_line("store_latency_seconds_bucket", lat.calls, {**backend, "le": "+Inf"}))
        out.append(_line("store_latency_seconds_sum", round(lat.seconds, 6), backend))
        out.append(_line("store_latency_seconds_count", lat.calls, backend))
        head("store_errors_total", "counter", "Control-plane store calls that failed.")
        out.append(_line("store_errors_total", lat.errors, backend))
    return "\n".join(out) + "\n"


class MetricsServer:
    """`GET /metrics` (and `/healthcheck`) on its own address; owned by the Edge."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthcheck", self.healthcheck)
        self._runner = web.AppRunner(app, access_log=None)
        self.sockname: tuple[str, int] = ("", 0)

    async def start(self, host: str, port: int) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        if self._runner.addresses:  # port 0: the one the system chose
            name = self._runner.addresses[0]
            self.sockname = (str(name[0]), int(name[1]))

    async def close(self) -> None:
        await self._runner.cleanup()

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(text=render(self.edge), content_type="text/plain",
                            charset="utf-8", headers={"Cache-Control": "no-store"})

    async def healthcheck(self, _: web.Request) -> web.Response:
        draining = self.edge.cluster.draining
        return web.Response(status=503 if draining else 200,
                            text="draining\n" if draining else "OK\n")
