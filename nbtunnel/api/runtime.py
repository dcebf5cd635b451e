"""One asyncio loop thread per process, where every notebook/API tunnel runs.

Why a thread: a kernel runs cells on its main thread, so a connector on the kernel's own loop
stops answering for as long as a cell blocks (`time.sleep`, CPU work). A dedicated loop thread
keeps serving. Why not nest_asyncio: it patches asyncio globally and, with ipykernel 7, can drop
queued cells; the thread needs no patch and behaves the same in a terminal, a test or a kernel.

The thread is a daemon (a kernel must be able to exit even if a user forgets to stop), but it is
stopped cleanly at interpreter exit (`atexit`) and by `stop_all()`: tunnels first, then the
embedded edge, then every task the runtime owns, then the loop's executor and the loop.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from nbtunnel.api.edges import start_local_edge
from nbtunnel.api.errors import RuntimeStateError

log = logging.getLogger("nbtunnel.runtime")

T = TypeVar("T")
THREAD_NAME = "nbtunnel-loop"


class Runtime:
    """The loop thread. `submit()` from any other thread; `spawn()` from the loop itself."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        # executor threads (DNS lookups by aiohttp) carry our name so leaks are visible
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="nbtunnel-executor")
        self.loop.set_default_executor(self._executor)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._edge: Any = None  # nbtunnel.edge.server.Edge, imported lazily
        self._edge_lock: asyncio.Lock | None = None
        self.closed = False
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self.thread.start()
        self._ready.wait()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    @property
    def on_loop_thread(self) -> bool:
        return threading.current_thread() is self.thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        if self.closed:
            coro.close()
            raise RuntimeStateError("the nbtunnel runtime has been shut down")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run coro on the loop and wait for it (never from the loop thread: it would block)."""
        if self.on_loop_thread:
            coro.close()
            raise RuntimeStateError("blocking call from the nbtunnel loop thread; "
                                    "use the async API")
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except BaseException:  # timeout, KeyboardInterrupt: do not leave the work running
            fut.cancel()
            raise

    def spawn(self, coro: Coroutine[Any, Any, T], name: str | None = None) -> asyncio.Task[T]:
        """Start an owned task (loop thread only); shutdown cancels and awaits what is left."""
        task = self.loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def add_closer(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Register an async cleanup run first at shutdown (the tunnel registry uses it)."""
        self._closers.append(closer)

    @property
    def local_edge(self) -> Any:
        return self._edge

    async def ensure_local_edge(self) -> Any:
        """The embedded edge, started on first use (loopback only, free UDP port)."""
        if self._edge_lock is None:
            self._edge_lock = asyncio.Lock()
        async with self._edge_lock:
            if self._edge is None:
                self._edge = await start_local_edge()
                if not log.isEnabledFor(logging.DEBUG):
                    logging.getLogger("nbtunnel.edge").setLevel(logging.WARNING)
            return self._edge

    async def _aclose(self) -> None:
        for closer in self._closers:
            try:
                await closer()
            except Exception:
                log.exception("nbtunnel shutdown step failed")
        if self._edge is not None:
            with contextlib.suppress(Exception):
                await self._edge.close()
            self._edge = None
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.loop.shutdown_asyncgens()
        await self.loop.shutdown_default_executor()

    def shutdown(self, timeout: float = 15.0) -> None:
        """Stop tunnels, edge, tasks and the thread; idempotent; callable from any other thread."""
        if self.closed:
            return
        if self.on_loop_thread:
            raise RuntimeStateError("shutdown() cannot run on the nbtunnel loop thread")
        fut = asyncio.run_coroutine_threadsafe(self._aclose(), self.loop)
        self.closed = True
        try:
            fut.result(timeout)
        except Exception:
            log.exception("nbtunnel runtime did not close cleanly")
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)
        if not self.thread.is_alive():
            self.loop.close()
        self._executor.shutdown(wait=False)


_runtime: Runtime | None = None
_lock = threading.Lock()
_setup_hooks: list[Callable[[Runtime], None]] = []


def on_new_runtime(hook: Callable[[Runtime], None]) -> None:
    """Call hook(runtime) for every runtime created from now on (registries attach closers)."""
    _setup_hooks.append(hook)


def get_runtime() -> Runtime:
    """The process's runtime, created (thread started) on first use."""
    global _runtime
    with _lock:
        if _runtime is None or _runtime.closed:
            _runtime = Runtime()
            for hook in _setup_hooks:
                hook(_runtime)
        return _runtime


def current_runtime() -> Runtime | None:
    return _runtime if _runtime is not None and not _runtime.closed else None


def shutdown_runtime(timeout: float = 15.0) -> None:
    """Close the runtime if one is running (tunnels, edge, thread). Safe to call repeatedly."""
    global _runtime
    with _lock:
        rt, _runtime = _runtime, None
    if rt is not None:
        rt.shutdown(timeout)


atexit.register(shutdown_runtime)
