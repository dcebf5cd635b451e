"""What `nbtunnel edge status` reads from the deployment's Redis (it never joins)."""

from __future__ import annotations

import json
import time
from typing import Any

from nbtunnel.edge.presence import EdgeInfo, P


async def read_status(url: str) -> tuple[list[EdgeInfo], list[dict[str, Any]]]:
    """What `nbtunnel edge status` shows: the live edges and every connection they hold
    (read-only: the caller does not join the deployment)."""
    import redis.asyncio as aredis

    r: Any = aredis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5)
    try:
        ids = await r.zrangebyscore(P + "edges", int(time.time() * 1000), "+inf")
        docs = await r.mget([P + "edge:" + i for i in ids]) if ids else []
        edges = sorted((EdgeInfo.from_json(json.loads(d)) for d in docs if d),
                       key=lambda e: e.id)
        conns: list[dict[str, Any]] = []
        for edge in edges:
            conns.extend(json.loads(v) for v in await r.hvals(P + "conns:" + edge.id))
        return edges, conns
    finally:
        await r.aclose()
