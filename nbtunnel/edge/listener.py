"""A TCP accept loop that survives running out of file descriptors.

asyncio's own server reports every failed `accept()` with a traceback through the loop's
exception handler. When a flood of idle clients holds every descriptor, that is one traceback
per attempt while nobody is served. This loop backs off instead (doubling up to a second),
logs one line when an episode starts and one when it ends, and hands each accepted socket to
the handler as an asyncio stream pair, in a task it owns.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Awaitable, Callable

log = logging.getLogger("nbtunnel.edge.listener")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

_STARVED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
MIN_BACKOFF = 0.05
MAX_BACKOFF = 1.0


class TcpListener:
    """Listens on one TCP address; ``close()`` stops accepting and cancels every client."""

    def __init__(self, handler: Handler, *, limit: int = 2**16) -> None:
        self._handler = handler
        self._limit = limit
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self.starved_episodes = 0
        """How many times accept() ran out of descriptors (each logged once)..."""
        self.refused_accepts = 0
        """...and how many accept() attempts failed in all."""

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host
                                    else socket.AF_INET, backlog=1024, reuse_port=reuse_port)
        sock.setblocking(False)
        self._sock = sock
        self._accepting = asyncio.get_running_loop().create_task(self._accept_loop(sock))

    @property
    def sockname(self) -> tuple[str, int]:
        assert self._sock is not None
        name = self._sock.getsockname()
        return name[0], name[1]

    async def close(self) -> None:
        tasks = [t for t in (self._accepting, *self._clients) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.0
        refused = 0
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno not in _STARVED:
                    log.warning("accept() failed: %s", exc)
                    await asyncio.sleep(MIN_BACKOFF)
                    continue
                if not backoff:
                    self.starved_episodes += 1
                    log.warning("out of file descriptors (%s): not accepting new connections "
                                "until some close", exc.strerror)
                refused += 1
                self.refused_accepts += 1
                backoff = min(MAX_BACKOFF, max(MIN_BACKOFF, backoff * 2))
                await asyncio.sleep(backoff)
                continue
            if backoff:
                log.warning("accepting connections again (%d accept attempts failed)", refused)
                backoff, refused = 0.0, 0
            task = loop.create_task(self._serve(conn))
            self._clients.add(task)
            task.add_done_callback(self._clients.discard)

    async def _serve(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=self._limit)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock=conn)
        except OSError:
            conn.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        try:
            await self._handler(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
