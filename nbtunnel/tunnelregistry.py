"""What `tunnel.py` builds on: target parsing, the registry of open tunnels, the watch throttle.

Kept apart so `Tunnel` itself stays about one tunnel; `nbtunnel.tunnel` re-exports the public
names. The registry (one tunnel per normalized target) lives here so `find_tunnel`/`stop_all`
need no `Tunnel` import.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from nbtunnel.connector.ingress import Ingress, IngressError
from nbtunnel.core.errors import NbtunnelError
from nbtunnel.runtime import current_runtime, shutdown_runtime

if TYPE_CHECKING:  # pragma: no cover
    from nbtunnel.tunnel import Tunnel

log = logging.getLogger("nbtunnel.tunnel")  # the logger users already configure


class TunnelError(NbtunnelError):
    """A tunnel could not be opened (edge unreachable, no connection registered in time)."""


class TargetError(TunnelError, ValueError):
    """The target is not a port, URL, hello_world or http_status:NNN."""


def normalize_target(target: int | str) -> str:
    """8888, "8888", "localhost:8888", a URL, hello_world, http_status:404 -> ingress service."""
    text = str(target).strip()
    if isinstance(target, bool) or not text:
        raise TargetError(f"invalid tunnel target {target!r}")
    if text.isdigit():
        if not 0 < int(text) < 65536:
            raise TargetError(f"port {text} is out of range 1-65535")
        text = f"http://localhost:{text}"
    elif text == "hello-world":
        text = "hello_world"
    elif text != "hello_world" and not text.startswith(("http_status:", "unix:")):
        if "://" not in text:
            text = "http://" + text
        text = text.rstrip("/")
    try:
        if "://" in text:
            parts = urlsplit(text)
            if not parts.hostname or parts.port == 0:
                raise ValueError("no host")
        Ingress.single(text)
    except ValueError as exc:  # urlsplit: bad port
        raise TargetError(f"invalid tunnel target {target!r}: {exc}") from exc
    except IngressError as exc:
        raise TargetError(f"invalid tunnel target {target!r}: {exc}") from exc
    return text


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


class Throttle:
    """Coalesces change notifications: at most one callback per interval (loop thread)."""

    def __init__(self, tunnel: Tunnel, callback: Callable[[Tunnel], None],
                 interval: float) -> None:
        self.tunnel, self.callback, self.interval = tunnel, callback, interval
        self.last = 0.0
        self.handle: asyncio.TimerHandle | None = None

    def poke(self) -> None:
        if self.handle is None:
            delay = max(0.0, self.last + self.interval - time.monotonic())
            self.handle = self.tunnel._runtime.loop.call_later(delay, self.flush)

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def flush(self) -> None:
        self.cancel()
        self.last = time.monotonic()
        try:
            self.callback(self.tunnel)
        except Exception:
            log.exception("tunnel watcher failed")
