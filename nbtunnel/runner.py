"""What the CLI commands run: an edge until stopped, or a connector (quick tunnel).

Kept apart from `cli.py` so argument parsing stays import-light (`--help` is instant).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from nbtunnel.connector.ingress import Ingress
from nbtunnel.connector.quick import request_quick_tunnel
from nbtunnel.connector.supervisor import Connector, ConnectorConfig
from nbtunnel.core.errors import NbtunnelError
from nbtunnel.edge.server import Edge, EdgeConfig
from nbtunnel.paths import default_home

log = logging.getLogger("nbtunnel")

Runner = Callable[[asyncio.Event], Awaitable[int]]


async def _start_edge(config: EdgeConfig, *, fallback_http: bool) -> Edge:
    edge = Edge(config)
    try:
        await edge.start()
    except OSError as exc:
        if not fallback_http or exc.errno != errno.EADDRINUSE:
            raise
        log.warning("port %d is busy; the embedded edge uses a free port instead",
                    config.http_port)
        config.http_port = 0
        edge = Edge(config)
        await edge.start()
    return edge


def run_edge(args: argparse.Namespace) -> Runner:
    async def runner(stop: asyncio.Event) -> int:
        config = EdgeConfig(
            state_dir=args.state_dir or default_home() / "edge",
            quic_host=args.listen[0], quic_port=args.listen[1],
            http_host=args.http[0], http_port=args.http[1],
            domain=args.domain, location=args.location, quic_backend=args.quic_backend,
        )
        try:
            edge = await _start_edge(config, fallback_http=False)
        except (OSError, NbtunnelError) as exc:
            log.error("cannot start the edge: %s", exc)
            return 1
        try:
            from nbtunnel.edge.bootstrap import ensure_admin_token

            assert edge.store is not None
            token_path, new_token = ensure_admin_token(edge.store, config.state_dir)
            # the token's path, never its value: stdout usually ends up in a log
            what = "Created account 'default' with an" if new_token else "The"
            print(f"{what} admin API token is in {token_path} (mode 0600); log in with:\n"
                  f"  nbtunnel login --api {edge.api_url} --token \"$(cat {token_path})\"",
                  flush=True)
            host, port = edge.quic_address
            print(f"nbtunnel edge is running\n"
                  f"  connectors:   udp {host}:{port}  (CA: {edge.ca_path})\n"
                  f"  public front: http://{edge.public_address[0]}:{edge.public_address[1]}\n"
                  f"  quick tunnels: cloudflared tunnel --edge {host}:{port} --cacert "
                  f"{edge.ca_path} --quick-service {edge.api_url} --url http://localhost:8000\n"
                  f"                 nbtunnel tunnel --edge {host}:{port} --cacert "
                  f"{edge.ca_path} --quick-service {edge.api_url} --url 8000", flush=True)
            await stop.wait()
        finally:
            await edge.close()
        return 0

    return runner


def banner(url: str) -> str:
    lines = ["Your quick Tunnel has been created! Visit it at:", url]
    width = max(len(line) for line in lines) + 4
    border = "+" + "-" * width + "+"
    return "\n".join([border, *(f"|  {line.ljust(width - 2)}|" for line in lines), border])


def run_tunnel(args: argparse.Namespace) -> Runner:
    from nbtunnel.cli import normalize_url

    service = "hello_world" if args.hello_world else normalize_url(args.url)

    async def runner(stop: asyncio.Event) -> int:
        edge: Edge | None = None
        edges = args.edge
        cacert = args.cacert
        quick_service = args.quick_service
        if not edges and os.environ.get("NBTUNNEL_EDGE"):
            from nbtunnel.cli import host_port

            edges = [host_port(e) for e in os.environ["NBTUNNEL_EDGE"].split(",")]
        try:
            if not edges:
                edge = await _start_edge(
                    EdgeConfig(quic_port=0, http_port=args.http_port,
                               quic_backend=args.quic_backend),
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
            quick_service = quick_service or f"http://{edges[0][0]}:8080"
            log.info("Requesting new quick Tunnel on %s...", quick_service)
            quick = await request_quick_tunnel(quick_service)
            port = edge.public_address[1] if edge else _port_of(quick_service)
            url = f"http://{quick.hostname}" + ("" if port == 80 else f":{port}")
            print(banner(url), flush=True)
            if quick.hostname.endswith(".localhost"):
                print(f"curl and browsers resolve *.localhost to this machine; with other "
                      f"clients send the Host header:\n  curl -H 'Host: {quick.hostname}' "
                      f"http://127.0.0.1:{port}/", flush=True)
            connector = Connector(ConnectorConfig(
                edge=list(edges), credentials=quick.credentials,
                ingress=Ingress.single(service), cacert=cacert,
                ha_connections=args.ha_connections, grace_period=args.grace_period,
                quic_backend=args.quic_backend, protocol=args.protocol,
                config_flags={"protocol": args.protocol},
            ))
            return await _serve(connector, stop)
        except NbtunnelError as exc:
            log.error("%s", exc)
            return 1
        finally:
            if edge is not None:
                await edge.close()

    return runner


def _port_of(url: str) -> int:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


async def _serve(connector: Connector, stop: asyncio.Event) -> int:
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(connector.run())
        stopper = tg.create_task(stop.wait())
        await asyncio.wait([run, stopper], return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            await connector.shutdown()
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopper
    return 0


__all__ = ["Path", "banner", "run_edge", "run_tunnel"]
