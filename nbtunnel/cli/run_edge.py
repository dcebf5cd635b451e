"""`nbtunnel edge`: run an edge (connector listener, API and public front) until a signal."""

from __future__ import annotations

import argparse
import asyncio
import logging

from nbtunnel.api.edges import start_edge
from nbtunnel.cli.serve import Runner
from nbtunnel.core.errors import NbtunnelError
from nbtunnel.edge.server import EdgeConfig
from nbtunnel.home import default_home

log = logging.getLogger("nbtunnel")


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
