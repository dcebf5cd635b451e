"""`nbtunnel tunnel --url URL`: a quick tunnel, on an embedded edge unless one is given."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from urllib.parse import urlsplit

from nbtunnel.api.edges import DEFAULT_EDGE_PORT, DEFAULT_HTTP_PORT, start_edge
from nbtunnel.api.options import options_from_args
from nbtunnel.api.probe import plan_origin, quick_ingress
from nbtunnel.api.targets import normalize_target, parse_host_port
from nbtunnel.cli.serve import Runner, serve_connector
from nbtunnel.connector.access_control import AccessControl, parse_auth
from nbtunnel.connector.quick import request_quick_tunnel
from nbtunnel.connector.supervisor import Connector, ConnectorConfig
from nbtunnel.core.errors import NbtunnelError
from nbtunnel.edge.server import Edge, EdgeConfig
from nbtunnel.home import default_home

log = logging.getLogger("nbtunnel")


def banner(url: str) -> str:
    lines = ["Your quick Tunnel has been created! Visit it at:", url]
    width = max(len(line) for line in lines) + 4
    border = "+" + "-" * width + "+"
    return "\n".join([border, *(f"|  {line.ljust(width - 2)}|" for line in lines), border])


def run_quick_tunnel(args: argparse.Namespace) -> Runner:
    service = "hello_world" if args.hello_world else normalize_target(args.url)

    async def runner(stop: asyncio.Event) -> int:
        edge: Edge | None = None
        edges = args.edge
        cacert = args.cacert
        quick_service = args.quick_service
        try:
            if not edges and os.environ.get("NBTUNNEL_EDGE"):
                edges = [parse_host_port(e, DEFAULT_EDGE_PORT)
                         for e in os.environ["NBTUNNEL_EDGE"].split(",")]
            if not edges:
                edge = await start_edge(
                    EdgeConfig(quic_port=0, http_port=args.http_port,
                               quic_backend=args.quic_backend,
                               quick_tunnels_per_minute=0),  # private: its own process only
                    fallback_http=True)
                edges = [edge.quic_address]
                cacert = str(edge.ca_path)
                quick_service = edge.api_url
                log.info("No edge configured: started a local edge in this process "
                         "(connectors udp %s:%d, public front %s)", *edge.quic_address,
                         edge.api_url)
                if not log.isEnabledFor(logging.DEBUG):
                    # the connector already reports each connection; keep edge warnings only
                    logging.getLogger("nbtunnel.edge").setLevel(logging.WARNING)
            if cacert is None:
                local = default_home() / "edge" / "ca.pem"
                if local.exists():
                    cacert = str(local)
                else:
                    log.error("--cacert is required for edge %s:%d (the edge prints its CA "
                              "path; it also serves it at /ca.pem)", *edges[0])
                    return 1
            quick_service = quick_service or f"http://{edges[0][0]}:{DEFAULT_HTTP_PORT}"
            log.info("Requesting new quick Tunnel on %s...", quick_service)
            quick = await request_quick_tunnel(quick_service)
            port = edge.public_address[1] if edge else _port_of(quick_service)
            url = f"http://{quick.hostname}" + ("" if port == 80 else f":{port}")
            print(banner(url), flush=True)
            if quick.hostname.endswith(".localhost"):
                print(f"curl and browsers resolve *.localhost to this machine; with other "
                      f"clients send the Host header:\n  curl -H 'Host: {quick.hostname}' "
                      f"http://127.0.0.1:{port}/", flush=True)
            opts = options_from_args(args, edge=None, inspect=False)
            host_header, notes = await plan_origin(service, opts)
            for note in notes:
                log.warning("%s", note) if note.startswith("warning") else log.info("%s", note)
            access = AccessControl(parse_auth(args.auth)) if args.auth else None
            if access is not None and access.spec.kind == "token":  # stdout, never the log
                print(f"--auth token: open {url}/?nbtunnel_token={access.spec.token} once in a "
                      f"browser (it sets a cookie), or send Authorization: Bearer "
                      f"{access.spec.token}", flush=True)
            connector = Connector(ConnectorConfig(
                edge=list(edges), credentials=quick.credentials,
                ingress=quick_ingress([(quick.hostname, service, host_header)]), cacert=cacert,
                ha_connections=args.ha_connections, grace_period=args.grace_period,
                quic_backend=args.quic_backend, protocol=args.protocol,
                config_flags={"protocol": args.protocol}, access=access,
            ))
            return await serve_connector(connector, stop)
        except NbtunnelError as exc:
            log.error("%s", exc)
            return 1
        finally:
            if edge is not None:
                await edge.close()

    return runner


def _port_of(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)

