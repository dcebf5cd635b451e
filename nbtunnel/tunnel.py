"""The public Python API: `open_tunnel(8888)` -> `Tunnel`, usable with or without IPython.

Every connector runs on the runtime's loop thread (see `runtime.py`), so a tunnel keeps serving
while the caller's thread blocks. Sync calls hand work to that loop and wait on a
`concurrent.futures.Future`; the async variants await the same work via `asyncio.wrap_future`.
One tunnel per target: opening the same target again returns the running tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from nbtunnel.connector.events import TunnelEvent
from nbtunnel.connector.ingress import Ingress, IngressError
from nbtunnel.core.errors import NbtunnelError
from nbtunnel.runtime import (
    EdgeSettings,
    Runtime,
    current_runtime,
    get_runtime,
    on_new_runtime,
    resolve_edge,
    shutdown_runtime,
)
from nbtunnel.tunnelstate import (
    ConnectionInfo,
    RequestRecord,
    TunnelState,
    TunnelStats,
    human_bytes,
)

log = logging.getLogger("nbtunnel.tunnel")

Watcher = Callable[["Tunnel"], None]


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


class Tunnel:
    """A running quick tunnel. Read its properties from any thread; they are snapshots."""

    def __init__(self, runtime: Runtime, service: str, target: int | str, hostname: str,
                 url: str, edge_label: str, front: tuple[str, int], connector: Any,
                 ha_connections: int, protocol: str) -> None:
        self.target = target
        self.service = service
        self.hostname = hostname
        self.url = url
        self.edge_label = edge_label
        self.front = front  # the edge's public HTTP front (host, port)
        self.error: str | None = None
        self.extra_urls: dict[str, str] = {}  # e.g. the JupyterHub proxy URL (notebook layer)
        self._runtime = runtime
        self._connector = connector
        self._state = TunnelState(ha_connections, protocol)
        self._task: asyncio.Task[None] | None = None
        self._watchers: list[_Throttle] = []
        self._cleanups: list[Callable[[], Any]] = []
        self._views: dict[str, Any] = {}  # widget cache for the notebook layer

    # -- read side --------------------------------------------------------------------------
    @property
    def status(self) -> str:
        return self._state.status

    @property
    def connections(self) -> list[ConnectionInfo]:
        return [c for _, c in sorted(self._state.connections.items())]

    @property
    def stats(self) -> TunnelStats:
        s = self._state.stats
        if self._state.stopped:
            return s
        streams = sum(c.in_flight for c in list(self._connector.connections.values()))
        return TunnelStats(s.requests, s.bytes_in, s.bytes_out, s.errors, streams)

    @property
    def recent(self) -> list[RequestRecord]:
        return list(self._state.recent)

    @property
    def version(self) -> int:
        return self._state.version

    def summary(self) -> str:
        """Compact text status (terminals, nbconvert, text/plain)."""
        conns = self.connections
        up = sum(1 for c in conns if c.state == "registered")
        s = self.stats
        lines = [f"nbtunnel {self.url} -> {self.service}  [{self.status}, {up}/{len(conns)} "
                 f"connections]",
                 f"  requests {s.requests}  errors {s.errors}  in {human_bytes(s.bytes_in)}  "
                 f"out {human_bytes(s.bytes_out)}  open streams {s.open_streams}"]
        lines += [f"  {label}: {url}" for label, url in self.extra_urls.items()]
        if self.error:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Tunnel {self.url} -> {self.service} {self.status}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        if self._views.get("suppress_widget"):  # the magic already showed it in this cell
            return {"text/plain": repr(self)}
        data: dict[str, Any] = {"text/plain": self.summary()}
        if _in_kernel():  # a widget front end may exist; terminals and scripts get text
            try:
                from nbtunnel.notebook.widget import widget_bundle
            except ImportError:
                return data
            data.update(widget_bundle(self))
        return data

    # -- events (loop thread) ---------------------------------------------------------------
    def _on_event(self, event: TunnelEvent) -> None:
        self._state.apply(event)
        for w in self._watchers:
            w.poke()

    def watch(self, callback: Watcher, interval: float = 0.25) -> Callable[[], None]:
        """Call callback(tunnel) on the loop thread after changes, at most every interval s.

        Returns an unsubscribe function (thread-safe)."""
        throttle = _Throttle(self, callback, interval)
        if self._runtime.closed or self._state.stopped:
            return lambda: None
        self._runtime.loop.call_soon_threadsafe(self._watchers.append, throttle)

        def unsubscribe() -> None:
            def drop() -> None:
                throttle.cancel()
                with contextlib.suppress(ValueError):
                    self._watchers.remove(throttle)

            if not self._runtime.closed:
                self._runtime.loop.call_soon_threadsafe(drop)

        return unsubscribe

    def add_cleanup(self, fn: Callable[[], Any]) -> None:
        """fn() (sync or async) runs on the loop when the tunnel stops."""
        self._cleanups.append(fn)

    # -- lifecycle --------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            await self._connector.run()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("tunnel %s failed: %s", self.url, self.error)
        finally:
            if _registry.get(self.service) is self:
                del _registry[self.service]
            for fn in self._cleanups:
                try:
                    result = fn()
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:
                    log.exception("tunnel cleanup failed")
            self._state.mark_stopped()
            for w in list(self._watchers):
                w.flush()
            self._watchers.clear()

    async def _wait_ready(self, n: int, timeout: float) -> None:
        assert self._task is not None
        ready = asyncio.ensure_future(self._connector.wait_ready(n))
        try:
            done, _ = await asyncio.wait([ready, self._task], timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            await asyncio.gather(ready, return_exceptions=True)
        if ready not in done:
            why = self.error or next((c.detail for c in self.connections if c.detail),
                                     "no answer from the edge")
            await self.astop(grace=0)
            raise TunnelError(f"no connection to {self.edge_label} registered within "
                              f"{timeout:g}s ({why})")

    async def astop(self, grace: float | None = 5.0) -> None:
        """Unregister, let in-flight requests finish (grace s), close. Runs on the loop."""
        if self._runtime.on_loop_thread:
            await self._astop(grace)
        else:
            await asyncio.wrap_future(self._runtime.submit(self._astop(grace)))

    async def _astop(self, grace: float | None) -> None:
        task = self._task
        if task is None or task.done():
            return
        await self._connector.shutdown(grace)  # unregistered, in-flight requests done or timed out
        # Connector.run() can still sit in the 1 s-apart start delays of connections that never
        # dialled (or wait for a first registration that never comes): cancel after a moment.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), 1.0)
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def stop(self, *, wait: bool = True, grace: float = 5.0) -> None:
        """Stop this tunnel. wait=False only schedules it (safe from any thread, e.g. a button
        handler on a kernel subshell or the loop thread itself)."""
        rt = self._runtime
        if rt.closed or (self._task is not None and self._task.done()):
            return
        if wait and not rt.on_loop_thread:
            rt.call(self._astop(grace))
        else:
            rt.loop.call_soon_threadsafe(lambda: rt.spawn(self._astop(grace)))

    def wait_ready(self, n: int = 1, timeout: float = 30.0) -> Tunnel:
        """Block until n connections are registered (raises TunnelError after timeout)."""
        self._runtime.call(self._wait_ready(n, timeout))
        return self

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> Tunnel:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.astop()


def _in_kernel() -> bool:
    """True inside an ipykernel shell (never imports IPython itself)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None


class _Throttle:
    """Coalesces change notifications: at most one callback per interval (loop thread)."""

    def __init__(self, tunnel: Tunnel, callback: Watcher, interval: float) -> None:
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


_registry: dict[str, Tunnel] = {}


async def _astart(rt: Runtime, service: str, target: int | str, settings: EdgeSettings,
                  ha_connections: int, protocol: str, wait: bool, timeout: float) -> Tunnel:
    from nbtunnel.connector.quick import request_quick_tunnel
    from nbtunnel.connector.supervisor import Connector, ConnectorConfig

    existing = _registry.get(service)
    if existing is None:
        if settings.edge is None:
            edge = await rt.ensure_local_edge()
            edges = [edge.quic_address]
            cacert: str | None = str(edge.ca_path)
            quick_service: str | None = edge.api_url
            front = edge.public_address
            label = (f"the embedded local edge (udp {edges[0][0]}:{edges[0][1]}, "
                     f"front {edge.api_url})")
        else:
            edges, cacert, quick_service = [settings.edge], settings.cacert, settings.quick_service
            assert quick_service is not None
            parts = urlsplit(quick_service)
            front = (parts.hostname or settings.edge[0], parts.port or 80)
            label = f"edge {settings.edge[0]}:{settings.edge[1]} (from {settings.source})"
        assert quick_service is not None
        try:
            quick = await request_quick_tunnel(quick_service)
        except NbtunnelError as exc:
            raise TunnelError(f"cannot open a quick tunnel on {label}: {exc}") from exc
        url = f"http://{quick.hostname}" + ("" if front[1] == 80 else f":{front[1]}")
        connector = Connector(ConnectorConfig(
            edge=list(edges), credentials=quick.credentials, ingress=Ingress.single(service),
            cacert=cacert, ha_connections=ha_connections, grace_period=5.0,
            config_flags={"protocol": protocol}))
        existing = Tunnel(rt, service, target, quick.hostname, url, label, front, connector,
                          ha_connections, protocol)
        connector.subscribe(existing._on_event)
        _registry[service] = existing
        existing._task = rt.spawn(existing._run(), name=f"nbtunnel-tunnel-{quick.hostname}")
        if wait:  # an existing tunnel is returned as it is, even while it reconnects
            await existing._wait_ready(1, timeout)
    return existing


def _prepare(target: int | str, edge: str | None, cacert: str | None, quick_service: str | None,
             ha_connections: int, protocol: str) -> tuple[str, EdgeSettings]:
    service = normalize_target(target)
    if ha_connections < 1:
        raise TunnelError("ha_connections must be at least 1")
    if protocol not in ("quic", "auto"):
        raise TunnelError(f"protocol {protocol!r} is not supported (quic, auto)")
    return service, resolve_edge(edge, cacert, quick_service)


def open_tunnel(target: int | str, *, edge: str | None = None, cacert: str | None = None,
                quick_service: str | None = None, ha_connections: int = 4,
                protocol: str = "quic", wait: bool = True, timeout: float = 30.0) -> Tunnel:
    """Publish target through a quick tunnel; returns once a connection is registered."""
    service, settings = _prepare(target, edge, cacert, quick_service, ha_connections, protocol)
    rt = get_runtime()
    return rt.call(_astart(rt, service, target, settings, ha_connections, protocol, wait,
                           timeout))


async def aopen_tunnel(target: int | str, *, edge: str | None = None, cacert: str | None = None,
                       quick_service: str | None = None, ha_connections: int = 4,
                       protocol: str = "quic", wait: bool = True,
                       timeout: float = 30.0) -> Tunnel:
    """Async open_tunnel: the connector still runs on the runtime thread, not on your loop."""
    service, settings = _prepare(target, edge, cacert, quick_service, ha_connections, protocol)
    rt = get_runtime()
    coro = _astart(rt, service, target, settings, ha_connections, protocol, wait, timeout)
    if rt.on_loop_thread:
        return await coro
    return await asyncio.wrap_future(rt.submit(coro))


def list_tunnels() -> list[Tunnel]:
    return list(_registry.values())


def find_tunnel(target: int | str) -> Tunnel | None:
    """The running tunnel for a target (port, URL, ...) or public URL/hostname, if any."""
    text = str(target).strip().rstrip("/")
    for t in list_tunnels():
        if text in (t.url, t.hostname):
            return t
    try:
        return _registry.get(normalize_target(target))
    except TargetError:
        return None


async def _astop_all() -> None:
    tunnels = list(_registry.values())
    await asyncio.gather(*(t._astop(2.0) for t in tunnels), return_exceptions=True)
    _registry.clear()


def stop_all() -> None:
    """Stop every tunnel, close the embedded edge and end the loop thread (re-created lazily)."""
    if current_runtime() is not None:
        shutdown_runtime()
    _registry.clear()


on_new_runtime(lambda rt: rt.add_closer(_astop_all))
