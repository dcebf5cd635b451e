"""`nbtunnel edge status`: the edges of a deployment, their connections and tunnels, as the
edges report them through Redis (`--presence`); it reads, it never joins."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import defaultdict

from nbtunnel.core.errors import NbtunnelError


def cmd_edge_status(args: argparse.Namespace) -> int:
    if not args.presence:
        raise NbtunnelError("edge status reads the deployment's Redis: give --presence "
                            "redis://HOST:PORT/DB (or set $NBTUNNEL_PRESENCE)")
    from nbtunnel.edge.presence_status import read_status

    try:
        edges, conns = asyncio.run(read_status(args.presence))
    except OSError as exc:
        raise NbtunnelError(f"cannot read Redis at {args.presence}: {exc}") from exc
    except Exception as exc:  # redis errors are not OSError
        raise NbtunnelError(f"cannot read Redis: {exc}") from exc
    if getattr(args, "output", None) == "json":
        print(json.dumps({"edges": [e.to_json() for e in edges], "connections": conns},
                         indent=2))
        return 0
    print(f"{'EDGE':<20}{'LOCATION':<10}{'STATE':<10}{'CONNS':>6}{'TUNNELS':>8}  "
          f"{'PEER':<22}FRONT")
    for e in edges:
        peer = f"{e.peer[0]}:{e.peer[1]}" if e.peer else "-"
        front = f"{e.front[0]}:{e.front[1]}" if e.front else "-"
        state = "draining" if e.draining else "serving"
        print(f"{e.id:<20}{e.location:<10}{state:<10}{e.connections:>6}{e.tunnels:>8}  "
              f"{peer:<22}{front}")
    by_tunnel: dict[str, list[str]] = defaultdict(list)
    for c in conns:
        by_tunnel[str(c.get("tunnel_id"))].append(f"{c.get('edge_id')}#{c.get('conn_index')}")
    if by_tunnel:
        print(f"\n{'TUNNEL':<38}CONNECTIONS (edge#index)")
        for tid, where in sorted(by_tunnel.items()):
            print(f"{tid:<38}{', '.join(sorted(where))}")
    if not edges:
        print("(no live edge reports to this Redis)")
    return 0
