"""Running a command until a signal: the first SIGINT/SIGTERM asks for a graceful stop (the
connector unregisters and finishes in-flight requests), a second one exits at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from nbtunnel.connector.supervisor import Connector

Runner = Callable[[asyncio.Event], Awaitable[int]]
log = logging.getLogger("nbtunnel")


def run_with_signals(runner: Runner) -> int:
    """Run runner(stop) in a fresh event loop; stop is set on the first signal."""

    async def wrapper() -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        hits = 0

        def on_signal() -> None:
            nonlocal hits
            hits += 1
            if hits > 1:
                os._exit(1)
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, on_signal)
        return await runner(stop)

    try:
        with asyncio.Runner(loop_factory=loop_factory()) as loop_runner:
            return loop_runner.run(wrapper())
    except KeyboardInterrupt:
        return 130


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (``pip install 'nbtunnel[fast]'``) and not
    turned off with NBTUNNEL_LOOP=asyncio; else None (asyncio's own loop)."""
    if os.environ.get("NBTUNNEL_LOOP", "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def serve_with_metrics(connector: Connector, stop: asyncio.Event,
                             metrics: str | None, quick_hostname: str = "") -> int:
    """serve_connector, with cloudflared's metrics server on metrics (HOST:PORT) if given."""
    if not metrics:
        return await serve_connector(connector, stop)
    from nbtunnel.api.errors import AddressError
    from nbtunnel.api.targets import parse_host_port
    from nbtunnel.connector.metrics import MetricsServer

    server = MetricsServer(connector, quick_hostname=quick_hostname)
    try:
        host, port = parse_host_port(str(metrics), 0)
        await server.start(host, port)
    except (OSError, AddressError) as exc:
        log.error("cannot start the metrics server on %s: %s", metrics, exc)
        return 1
    log.info("Starting metrics server on %s:%d/metrics", *server.sockname)
    try:
        return await serve_connector(connector, stop)
    finally:
        await server.close()


async def serve_connector(connector: Connector, stop: asyncio.Event) -> int:
    """Run connector until it ends or stop is set (then shut it down gracefully)."""
    async with asyncio.TaskGroup() as tg:
        run = tg.create_task(connector.run())
        stopper = tg.create_task(stop.wait())
        await asyncio.wait([run, stopper], return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            await connector.shutdown()
        stopper.cancel()  # the group awaits it
    return 0
