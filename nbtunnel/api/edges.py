"""Which edge a tunnel connects to, and starting an edge in this process.

`resolve_edge` reads, in order: the argument, `$NBTUNNEL_EDGE`, `$NBTUNNEL_HOME/config.json`;
each may say `cloudflare` (Cloudflare's edge), `local` (an edge embedded in this process),
`auto` (Cloudflare if reachable within a few seconds, else local) or `HOST:PORT` (a
self-hosted edge). With none of them it is `auto`. `start_edge` is shared by `nbtunnel edge`,
`nbtunnel tunnel --edge local` and the notebook runtime.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbtunnel.api.errors import AddressError, EdgeConfigError
from nbtunnel.api.targets import parse_host_port
from nbtunnel.home import default_home

if TYPE_CHECKING:  # pragma: no cover
    from nbtunnel.connector.cloudflare import CloudflareOptions
    from nbtunnel.edge.server import Edge, EdgeConfig

log = logging.getLogger("nbtunnel")

DEFAULT_EDGE_PORT = 7844
DEFAULT_HTTP_PORT = 8080


EDGE_KINDS = ("auto", "cloudflare", "local")


@dataclass(frozen=True)
class EdgeSettings:
    """Where tunnels connect: a kind, and for kind "address" the edge's HOST:PORT."""

    edge: tuple[str, int] | None
    cacert: str | None
    quick_service: str | None
    source: str  # "argument", "NBTUNNEL_EDGE", a config file path, or "default"
    kind: str = "address"  # "auto", "cloudflare", "local" or "address"
    region: str | None = None

    @property
    def is_cloudflare(self) -> bool:
        return self.kind in ("auto", "cloudflare")

    def cloudflare_options(self, user_agent: str | None = None) -> CloudflareOptions:
        from nbtunnel.connector.cloudflare import CloudflareOptions
        from nbtunnel.connector.quick import CLOUDFLARE_QUICK_SERVICE

        return CloudflareOptions(region=self.region, cacert=self.cacert,
                                 quick_service=self.quick_service or CLOUDFLARE_QUICK_SERVICE,
                                 user_agent=user_agent)


def edge_kind(text: str) -> str | None:
    """The keyword (auto, cloudflare, local) text names, or None for an address."""
    word = text.strip().lower()
    return word if word in EDGE_KINDS else None


def config_path() -> Path:
    return default_home() / "config.json"


def read_config() -> dict[str, Any]:
    """`$NBTUNNEL_HOME/config.json` as a dict (empty when there is none)."""
    path = config_path()
    if not path.exists():
        return {}
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EdgeConfigError(f"cannot read {path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise EdgeConfigError(f"{path} must hold a JSON object")
    return loaded


def resolve_edge(edge: str | None = None, cacert: str | None = None,
                 quick_service: str | None = None, region: str | None = None) -> EdgeSettings:
    """Argument, then `NBTUNNEL_EDGE`, then `$NBTUNNEL_HOME/config.json`, else auto."""
    source = "argument"
    doc = read_config()
    path = config_path()
    if edge is None and os.environ.get("NBTUNNEL_EDGE"):
        edge, source = os.environ["NBTUNNEL_EDGE"].split(",")[0], "NBTUNNEL_EDGE"
    if edge is None and doc.get("edge"):
        edge, source = str(doc["edge"]), str(path)
    region = region or (str(doc["region"]) if doc.get("region") else None)
    if edge is None:
        edge, source = "auto", "default"
    kind = edge_kind(edge)
    if kind is not None:
        if kind == "local":
            return EdgeSettings(None, None, None, source, "local")
        cacert = cacert or (str(doc["cacert"]) if doc.get("cacert") else None)
        quick_service = quick_service or (str(doc["quick_service"])
                                          if doc.get("quick_service") else None)
        return EdgeSettings(None, cacert, quick_service, source, kind, region)
    try:
        host, port = parse_host_port(edge, DEFAULT_EDGE_PORT)
    except AddressError as exc:
        raise EdgeConfigError(f"edge from {source}: {exc}") from exc
    cacert = cacert or (str(doc["cacert"]) if doc.get("cacert") else None)
    if cacert is None and (default_home() / "edge" / "ca.pem").exists():
        cacert = str(default_home() / "edge" / "ca.pem")
    if cacert is None:
        raise EdgeConfigError(f"no CA for edge {host}:{port}: pass cacert= (the edge prints "
                              "its CA path and serves it at /ca.pem)")
    quick_service = (quick_service or (str(doc["quick_service"]) if doc.get("quick_service")
                                       else None) or f"http://{host}:{DEFAULT_HTTP_PORT}")
    return EdgeSettings((host, port), cacert, quick_service, source)


async def start_edge(config: EdgeConfig, *, fallback_http: bool, announce: bool = True) -> Edge:
    """Start an edge; with fallback_http a busy public-front port becomes any free port
    (announced with a warning unless announce is False)."""
    from nbtunnel.edge.server import Edge

    edge = Edge(config)
    try:
        await edge.start()
    except OSError as exc:
        if not fallback_http or config.http_port == 0 or exc.errno != errno.EADDRINUSE:
            raise
        log.log(logging.WARNING if announce else logging.DEBUG,
                "port %d is busy; the embedded edge uses a free port instead", config.http_port)
        config.http_port = 0
        edge = Edge(config)
        await edge.start()
    return edge


async def start_local_edge() -> Edge:
    """The notebook runtime's embedded edge: loopback, free UDP port, public front on 8080
    (or $NBTUNNEL_HTTP_PORT) like the CLI, any free port if that one is busy."""
    from nbtunnel.edge.server import EdgeConfig

    port = int(os.environ.get("NBTUNNEL_HTTP_PORT", str(DEFAULT_HTTP_PORT)))
    # no quick-tunnel rate limit: this edge's tunnels are requested by this process only
    # (a notebook opening 30 tunnels in a loop must not meet a 429); an HTTPS front on any
    # free port, for `%tunnel ssh 22` and cloudflared access
    return await start_edge(EdgeConfig(quic_port=0, http_port=port, https_port=0,
                                       quick_tunnels_per_minute=0),
                            fallback_http=True, announce=False)
