"""`nbtunnel edge`: run an edge (connector listener, API and public front) until a signal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal

from nbtunnel.api.edges import start_edge
from nbtunnel.cli.serve import Runner
from nbtunnel.cli.workers import WORKER_ENV, announce_ready
from nbtunnel.core.errors import NbtunnelError
from nbtunnel.edge.limits import FrontLimits
from nbtunnel.edge.server import Edge, EdgeConfig
from nbtunnel.home import default_home

log = logging.getLogger("nbtunnel")


def _metrics_address(addr: tuple[str, int] | None) -> tuple[str, int] | None:
    """`--metrics HOST:PORT`; worker i of `--workers N` listens on PORT + i."""
    if addr is None:
        return None
    index = int(os.environ.get(WORKER_ENV, "0"))
    return addr[0], addr[1] + index if addr[1] else 0


def run_edge(args: argparse.Namespace) -> Runner:
    async def runner(stop: asyncio.Event) -> int:
        config = EdgeConfig(
            state_dir=args.state_dir or default_home() / "edge",
            quic_host=args.listen[0], quic_port=args.listen[1],
            http_host=args.http[0], http_port=args.http[1],
            domain=args.domain, location=args.location, quic_backend=args.quic_backend,
            quick_tunnels_per_minute=args.quick_tunnel_rate,
            quick_tunnel_idle_expiry=args.quick_tunnel_expiry,
            registration_timeout=args.registration_timeout,
            https_host=args.https[0] if args.https else "127.0.0.1",
            https_port=args.https[1] if args.https else None,
            https_certs=list(zip(args.https_cert, args.https_key, strict=True)),
            https_redirect=args.https_redirect,
            store=args.store, presence=args.presence, edge_id=args.edge_id,
            peer_host=args.peer_listen[0] if args.peer_listen else args.listen[0],
            peer_port=args.peer_listen[1] if args.peer_listen else 0,
            peer_advertise=args.peer_advertise, reuse_port=WORKER_ENV in os.environ,
            metrics=_metrics_address(args.metrics),
            front=FrontLimits(min_body_rate=args.min_body_rate),
        )
        try:
            edge = await start_edge(config, fallback_http=False)
        except (OSError, NbtunnelError) as exc:
            log.error("cannot start the edge: %s", exc)
            return 1
        try:
            from nbtunnel.edge.bootstrap import ensure_admin_token

            assert edge.store is not None
            token_path, new_token = await ensure_admin_token(edge.store, config.state_dir)
            announce_ready()
            if os.environ.get(WORKER_ENV, "0") != "0":  # worker 0 prints for all of them
                await stop.wait()
                await edge.drain()
                return 0
            # the token's path, never its value: stdout usually ends up in a log
            what = "Created account 'default'; its" if new_token else "The"
            print(f"{what} admin API token is in {token_path} (mode 0600); log in with:\n"
                  f"  nbtunnel login --api {edge.api_url} --token \"$(cat {token_path})\"",
                  flush=True)
            host, port = edge.quic_address
            print(f"nbtunnel edge is running\n"
                  f"  connectors:   udp+tcp {host}:{port}  (CA: {edge.ca_path})\n"
                  f"  public front: http://{edge.public_address[0]}:{edge.public_address[1]}\n"
                  f"  quick tunnels: cloudflared tunnel --edge {host}:{port} --cacert "
                  f"{edge.ca_path} --quick-service {edge.api_url} --url http://localhost:8000\n"
                  f"                 nbtunnel tunnel --edge {host}:{port} --cacert "
                  f"{edge.ca_path} --quick-service {edge.api_url} --url 8000", flush=True)
            if edge.https_address is not None:
                https_host, https_port = edge.https_address
                source = ("certificates: " + ", ".join(str(c) for c in args.https_cert)
                          if args.https_cert else
                          f"certificates issued per hostname by the CA {edge.ca_path} "
                          f"(trust it: curl --cacert {edge.ca_path})")
                print(f"  https front:  https://{https_host}:{https_port}  ({source}; "
                      f"SIGHUP reloads certificate files)", flush=True)
                _reload_on_sighup(edge)
            await stop.wait()
            await edge.drain()  # several edges: connectors move before we close
        finally:
            await edge.close()
        return 0

    return runner


def _reload_on_sighup(edge: Edge) -> None:
    """SIGHUP re-reads the HTTPS certificate files; open connections keep theirs."""

    def reload() -> None:
        try:
            edge.reload_certificates()
            print("nbtunnel edge: HTTPS certificates reloaded", flush=True)
        except NbtunnelError as exc:
            log.error("certificate reload failed, keeping the previous ones: %s", exc)

    with contextlib.suppress(NotImplementedError, AttributeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
