"""The tunnels this process has open: one per normalized target, and stopping them all.

Kept apart from `tunnel.py` so `find_tunnel`/`stop_all` need no `Tunnel` import; every new
runtime gets `astop_all` as its first closer, so a shutdown stops tunnels before the edge.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from nbtunnel.api.errors import TargetError
from nbtunnel.api.runtime import current_runtime, on_new_runtime, shutdown_runtime
from nbtunnel.api.targets import normalize_target

if TYPE_CHECKING:  # pragma: no cover
    from nbtunnel.api.tunnel import Tunnel


# -- registry: normalized target -> running tunnel (touched on the loop thread or after it) ---
registry: dict[str, Tunnel] = {}


def list_tunnels() -> list[Tunnel]:
    return list(registry.values())


def find_tunnel(target: int | str) -> Tunnel | None:
    """The running tunnel for a target (port, URL, ...) or public URL/hostname, if any."""
    text = str(target).strip().rstrip("/")
    for t in list_tunnels():
        if text in (t.url, t.hostname):
            return t
    try:
        return registry.get(normalize_target(target))
    except TargetError:
        return None


async def astop_all() -> None:
    """The runtime's closer: stop every registered tunnel before the loop ends."""
    tunnels = list(registry.values())
    await asyncio.gather(*(t._astop(2.0) for t in tunnels), return_exceptions=True)
    registry.clear()


def stop_all() -> None:
    """Stop every tunnel, close the embedded edge and end the loop thread (re-created lazily)."""
    if current_runtime() is not None:
        shutdown_runtime()
    registry.clear()


on_new_runtime(lambda rt: rt.add_closer(astop_all))
