"""`Tunnel`: one running quick tunnel, its live state, watchers and stop.

Its connector runs on the runtime's loop thread (see `runtime.py`), so a tunnel keeps serving
while the caller's thread blocks. Sync calls hand work to that loop and wait on a
`concurrent.futures.Future`; the async variants await the same work via `asyncio.wrap_future`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from nbtunnel.api.errors import TunnelError
from nbtunnel.api.options import TunnelOptions
from nbtunnel.api.registry import registry as _registry
from nbtunnel.api.runtime import Runtime
from nbtunnel.api.state import ConnectionInfo, RequestRecord, TunnelState, TunnelStats, human_bytes
from nbtunnel.api.traffic import TrafficMixin
from nbtunnel.connector.events import TunnelEvent

log = logging.getLogger("nbtunnel.tunnel")

Watcher = Callable[["Tunnel"], None]
Renderer = Callable[["Tunnel"], dict[str, Any]]
_renderers: list[Renderer] = []


def add_renderer(renderer: Renderer) -> None:
    """Let a display layer add MIME data to `Tunnel._repr_mimebundle_` (the notebook layer adds
    its widget this way, so this module never imports it). Adding the same one twice is a no-op.
    """
    if renderer not in _renderers:
        _renderers.append(renderer)


class Tunnel(TrafficMixin):
    """A running quick tunnel. Read its properties from any thread; they are snapshots."""

    def __init__(self, runtime: Runtime, service: str, target: int | str, hostname: str,
                 url: str, edge_label: str, front: tuple[str, int], connector: Any,
                 options: TunnelOptions, notes: list[str] | None = None,
                 routes: list[tuple[str, str, str]] | None = None) -> None:
        self.target = target
        self.service = service
        self.hostname = hostname
        self.url = url
        self.edge_label = edge_label
        self.front = front  # the edge's public HTTP front (host, port)
        self.options = options
        # (hostname, url, service) per published target; one connector serves them all
        self.routes = routes or [(hostname, url, service)]
        self.notes = notes or []  # one-line facts for the user (Jupyter preset, closed port)
        self.error: str | None = None
        self.extra_urls: dict[str, str] = {}  # e.g. the JupyterHub proxy URL (notebook layer)
        self.access_help: str | None = None  # access commands, for a tcp:// or ssh:// target
        self.public = False  # on Cloudflare's edge: anyone who has the URL reaches the service
        self.reach = "this URL is local: it works on this machine only"
        self.edge_note = ""  # why `auto` started a local edge instead of using Cloudflare's
        self._runtime = runtime
        self._connector = connector
        self._state = TunnelState(options.ha_connections, options.protocol or "quic")
        self._task: asyncio.Task[None] | None = None
        self._watchers: list[Throttle] = []
        self._cleanups: list[Callable[[], Any]] = []
        self._views: dict[str, Any] = {}  # widget cache for the notebook layer

    @property
    def local_only(self) -> bool:
        """True when only this machine can open the URL (a *.localhost name or a loopback
        front); False when the edge serves it to others."""
        return self.hostname.endswith(".localhost") or self.front[0] in (
            "127.0.0.1", "localhost", "::1")

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
        lines[1:1] = [f"  also {url} -> {service}" for _, url, service in self.routes[1:]]
        lines.append(f"  {self.reach}")
        if self.edge_note:
            lines.append(f"  {self.edge_note}")
        lines += [f"  {label}: {url}" for label, url in self.extra_urls.items()]
        if self.access_help:
            lines += ["  " + line for line in self.access_help.splitlines()]
        if self.error:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Tunnel {self.url} -> {self.service} {self.status}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        if self._views.get("suppress_widget"):  # the magic already showed it in this cell
            return {"text/plain": repr(self)}
        data: dict[str, Any] = {"text/plain": self.summary()}
        for render in _renderers:
            data.update(render(self))
        return data

    # -- events (loop thread) ---------------------------------------------------------------
    def _on_event(self, event: TunnelEvent) -> None:
        self._state.apply(event)
        for w in self._watchers:
            w.poke()

    def watch(self, callback: Watcher, interval: float = 0.25) -> Callable[[], None]:
        """Call callback(tunnel) on the loop thread after changes, at most every interval s.

        Returns an unsubscribe function (thread-safe)."""
        throttle = Throttle(self, callback, interval)
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
            for _, _, service in self.routes:
                if _registry.get(service) is self:
                    del _registry[service]
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
        task = self._task
        assert task is not None
        async with asyncio.TaskGroup() as tg:  # whichever comes first: registered, or run() ended
            ready = tg.create_task(self._connector.wait_ready(n))
            ended = tg.create_task(asyncio.wait([task]))
            await asyncio.wait([ready, ended], timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            registered = ready.done()
            ready.cancel()
            ended.cancel()
        if not registered:
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
        await self._release_sockets()

    async def _release_sockets(self, deadline: float = 2.0) -> None:
        """A closed QUIC connection keeps its UDP socket through the draining period; wait
        for the end of it, so that stop_all(), which stops the loop right after, leaves no
        socket open (and a Stop is really over when it returns)."""
        waits = [c.conn.wait_closed() for c in list(self._connector.connections.values())
                 if c.conn is not None]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(deadline):
                await asyncio.gather(*waits)
        await asyncio.sleep(0)  # the transport closes its socket on the next loop iteration

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
