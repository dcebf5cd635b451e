"""The public front's TCP listener: asyncio's server, owned client tasks, and one log line per
episode when file descriptors run out.

asyncio's server already backs off when `accept()` fails with EMFILE/ENFILE/ENOBUFS/ENOMEM (it
stops accepting for a second, then retries), but it reports every failed attempt through the
loop's exception handler with a full traceback. While a flood of idle clients holds every
descriptor that is a traceback a second per listener, for as long as it lasts. A filter on the
`asyncio` logger turns each episode into one warning line (an episode ends after a quiet
spell of `EPISODE_GAP` seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("nbtunnel.edge.listener")

Handler = Callable[["ClientReader", asyncio.StreamWriter], Awaitable[None]]

ASYNCIO_STARVED = "socket.accept() out of system resource"
EPISODE_GAP = 5.0


class _StarvedAccepts(logging.Filter):
    """Collapses asyncio's per-attempt accept() failure reports into one line per episode."""

    def __init__(self) -> None:
        super().__init__()
        self.episodes = 0
        self.refused = 0
        self._last = float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith(ASYNCIO_STARVED):
            return True
        now = time.monotonic()
        self.refused += 1
        if now - self._last > EPISODE_GAP:
            self.episodes += 1
            exc = record.exc_info[1] if record.exc_info else None
            log.warning("out of file descriptors (%s): not accepting new connections until "
                        "some close; retrying every second", getattr(exc, "strerror", exc))
        self._last = now
        return False


STARVED = _StarvedAccepts()
"""Process-wide: asyncio reports these failures through one logger for every server."""


def _install_filter() -> None:
    logger = logging.getLogger("asyncio")
    if STARVED not in logger.filters:
        logger.addFilter(STARVED)


class ClientReader(asyncio.StreamReader):
    """asyncio's stream reader plus a hook for the moment the client goes away (EOF, reset):
    while a response is pending nobody reads, and the front learns of a departed client
    through ``on_gone`` instead of a watcher task per request."""

    on_gone: Callable[[], None] | None = None

    def feed_eof(self) -> None:
        super().feed_eof()
        if self.on_gone is not None:
            self.on_gone()

    def set_exception(self, exc: Exception) -> None:
        super().set_exception(exc)
        if self.on_gone is not None:
            self.on_gone()


async def start_server(handler: Handler, host: str, port: int, *, limit: int = 2**16,
                       **kwargs: Any) -> asyncio.Server:
    """`asyncio.start_server` with a `ClientReader` per connection."""
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        reader = ClientReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, handler, loop=loop)  # type: ignore[arg-type]

    return await loop.create_server(factory, host, port, **kwargs)


class TcpListener:
    """Listens on one TCP address; ``close()`` stops accepting and cancels every client."""

    def __init__(self, handler: Handler, *, limit: int = 2**16) -> None:
        self._handler = handler
        self._limit = limit
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        _install_filter()
        self._server = await start_server(self._serve, host, port, limit=self._limit,
                                          backlog=1024, reuse_port=reuse_port or None)

    @property
    def sockname(self) -> tuple[str, int]:
        assert self._server is not None
        name = self._server.sockets[0].getsockname()
        return name[0], name[1]

    @property
    def starved_episodes(self) -> int:
        """Episodes of accept() failing for lack of descriptors (process-wide, each logged
        once)..."""
        return STARVED.episodes

    @property
    def refused_accepts(self) -> int:
        """...and the failed attempts in all."""
        return STARVED.refused

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._clients)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: ClientReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)  # owned: close() cancels and awaits every client task
        try:
            await self._handler(reader, writer)
        except asyncio.CancelledError:
            pass  # close() cancelled us; end quietly (asyncio's server reads our result)
        finally:
            self._clients.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
