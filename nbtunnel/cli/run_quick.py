"""`nbtunnel tunnel --url URL`: a quick tunnel on Cloudflare's edge, a local or a given edge.

`--edge auto` (the default) asks Cloudflare first within a few seconds (discovery, then the
quick API) and otherwise starts an edge in this process after one line saying why;
`cloudflare` insists, `local` skips the check, HOST:PORT is a self-hosted edge.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from nbtunnel.access.instructions import EdgeReach, instructions
from nbtunnel.api.edges import DEFAULT_HTTP_PORT, start_edge
from nbtunnel.api.options import options_from_args
from nbtunnel.api.probe import plan_origin, quick_ingress
from nbtunnel.api.targets import normalize_target
from nbtunnel.cli.edge_choice import EdgeChoice, choose_edge, cloudflare_options
from nbtunnel.cli.serve import Runner, serve_with_metrics
from nbtunnel.connector.access_control import AccessControl, parse_auth
from nbtunnel.connector.cloudflare import (
    AUTO_BUDGET,
    LOCAL_NOTICE,
    PUBLIC_NOTICE,
    QUICK_HA_CONNECTIONS,
    CloudflareUnavailable,
    fallback_line,
    open_quick,
    quick_box,
)
from nbtunnel.connector.ingress import Ingress
from nbtunnel.connector.quick import request_quick_tunnel
from nbtunnel.connector.stream_origin import is_stream_service
from nbtunnel.connector.supervisor import Connector, ConnectorConfig
from nbtunnel.core.errors import NbtunnelError
from nbtunnel.core.http1 import http_url
from nbtunnel.edge.server import Edge, EdgeConfig
from nbtunnel.home import default_home

log = logging.getLogger("nbtunnel")

DEFAULT_HA = 4
DEFAULT_GRACE = 30.0


@dataclass
class _Serve:
    """What every edge kind serves: the service, its ingress (the Jupyter preset) and --auth."""

    service: str
    ingress: Ingress
    access: AccessControl | None

    def show_access(self, hostname: str, reach: EdgeReach) -> None:
        """A tcp:// or ssh:// service: the access commands the other machine needs."""
        if self.stream:
            print(instructions(hostname, self.service, reach), flush=True)

    @property
    def stream(self) -> bool:
        """A TCP service: no page to curl."""
        return is_stream_service(self.service)

    def show_token(self, url: str) -> None:
        if self.access is not None and self.access.spec.kind == "token":  # stdout, not logs
            print(f"--auth token: open {url}/?nbtunnel_token={self.access.spec.token} once in "
                  f"a browser (it sets a cookie), or send Authorization: Bearer "
                  f"{self.access.spec.token}", flush=True)


def run_quick_tunnel(args: argparse.Namespace) -> Runner:
    target = "hello_world" if args.hello_world else normalize_target(args.url)

    async def runner(stop: asyncio.Event) -> int:
        try:
            opts = options_from_args(args, edge=None, inspect=False, token=None)
            host_header, notes = await plan_origin(target, opts)
            for note in notes:
                log.warning("%s", note) if note.startswith("warning") else log.info("%s", note)
            service = _Serve(target, quick_ingress([("", target, host_header)]),
                             AccessControl(parse_auth(args.auth)) if args.auth else None)
            choice = choose_edge(args.edge)
            if choice.kind in ("cloudflare", "auto"):
                code = await _on_cloudflare(args, service, choice, stop)
                if code is not None:
                    return code
                choice = EdgeChoice("local", (), "auto")
            if choice.kind == "local":
                return await _on_local(args, service, stop)
            return await _on_address(args, service, choice, stop)
        except NbtunnelError as exc:
            log.error("%s", exc)
            return 1

    return runner


async def _on_cloudflare(args: argparse.Namespace, service: _Serve, choice: EdgeChoice,
                         stop: asyncio.Event) -> int | None:
    """Serve on Cloudflare; None when `auto` could not reach it (the caller goes local)."""
    options = cloudflare_options(args)
    log.info("Requesting new quick Tunnel on %s...", options.quick_service)
    try:
        edge, quick = await open_quick(options,
                                       budget=AUTO_BUDGET if choice.kind == "auto" else None)
    except CloudflareUnavailable as exc:
        if choice.kind == "cloudflare":
            log.error("cannot use Cloudflare's edge: %s", exc)
            return 1
        log.warning("%s", fallback_line(exc))
        return None
    log.info("Edge discovery: %s", edge.describe())
    print(quick_box(quick.url), flush=True)
    print(f"nbtunnel: {PUBLIC_NOTICE}", flush=True)
    service.show_token(quick.url)
    service.show_access(quick.hostname, EdgeReach())
    if args.ha_connections not in (None, QUICK_HA_CONNECTIONS):
        log.info("Quick tunnels make a single connection to the edge (--ha-connections %d "
                 "ignored, as cloudflared)", args.ha_connections)
    # cloudflared uses QUIC for quick tunnels; we also fall back to HTTP/2 when UDP is
    # blocked (Colab, Binder, offices) unless --protocol says otherwise
    protocol = args.protocol or "auto"
    connector = Connector(ConnectorConfig(
        edge=[], credentials=quick.credentials, ingress=service.ingress, access=service.access,
        pool=edge.pool, trust=edge.trust, ha_connections=QUICK_HA_CONNECTIONS,
        grace_period=_grace(args), quic_backend=args.quic_backend, protocol=protocol,
        config_flags={"protocol": protocol}))
    return await serve_with_metrics(connector, stop, args.metrics, quick.hostname)


async def _on_local(args: argparse.Namespace, service: _Serve, stop: asyncio.Event) -> int:
    edge = await start_edge(EdgeConfig(quic_port=0, http_port=args.http_port, https_port=0,
                                       quic_backend=args.quic_backend,
                                       quick_tunnels_per_minute=0),  # private: this process
                            fallback_http=True)
    try:
        log.info("Started a local edge in this process (connectors udp %s:%d, public front "
                 "%s)", *edge.quic_address, edge.api_url)
        if not log.isEnabledFor(logging.DEBUG):
            # the connector already reports each connection; keep edge warnings only
            logging.getLogger("nbtunnel.edge").setLevel(logging.WARNING)
        return await _serve_quick(args, service, stop, [edge.quic_address],
                                  str(edge.ca_path), edge.api_url, edge)
    finally:
        await edge.close()


async def _on_address(args: argparse.Namespace, service: _Serve, choice: EdgeChoice,
                      stop: asyncio.Event) -> int:
    edges = list(choice.addresses)
    cacert = args.cacert
    if cacert is None:
        local = default_home() / "edge" / "ca.pem"
        if not local.exists():
            log.error("--cacert is required for edge %s:%d (the edge prints its CA path; it "
                      "also serves it at /ca.pem)", *edges[0])
            return 1
        cacert = str(local)
    quick_service = args.quick_service or f"http://{edges[0][0]}:{DEFAULT_HTTP_PORT}"
    return await _serve_quick(args, service, stop, edges, cacert, quick_service, None)


async def _serve_quick(args: argparse.Namespace, service: _Serve, stop: asyncio.Event,
                       edges: list[tuple[str, int]], cacert: str, quick_service: str,
                       edge: Edge | None) -> int:
    log.info("Requesting new quick Tunnel on %s...", quick_service)
    quick = await request_quick_tunnel(quick_service, user_agent=args.user_agent,
                                       extra_cafile=cacert)
    port = edge.public_address[1] if edge else _port_of(quick_service)
    url = http_url(quick.hostname, port)
    print(quick_box(url, headline="Your quick Tunnel has been created! Visit it at:"), flush=True)
    if quick.hostname.endswith(".localhost"):
        print(f"nbtunnel: {LOCAL_NOTICE}", flush=True)
    if quick.hostname.endswith(".localhost") and not service.stream:
        print(f"curl and browsers resolve *.localhost to this machine; with other "
              f"clients send the Host header:\n  curl -H 'Host: {quick.hostname}' "
              f"http://127.0.0.1:{port}/", flush=True)
    service.show_token(url)
    service.show_access(quick.hostname, EdgeReach(edge.https_address, cacert) if edge else
                        EdgeReach(None, cacert))
    protocol = args.protocol or "quic"
    connector = Connector(ConnectorConfig(
        edge=list(edges), credentials=quick.credentials, ingress=service.ingress,
        access=service.access, cacert=cacert, embedded_edge=edge is not None,
        ha_connections=args.ha_connections or DEFAULT_HA,
        grace_period=_grace(args), quic_backend=args.quic_backend, protocol=protocol,
        config_flags={"protocol": protocol}))
    return await serve_with_metrics(connector, stop, args.metrics, quick.hostname)


def _grace(args: argparse.Namespace) -> float:
    return DEFAULT_GRACE if args.grace_period is None else float(args.grace_period)


def _port_of(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)
