"""Local ends of `nbtunnel access`: a TCP listener (one WebSocket per accepted connection, as
`cloudflared access tcp`) and stdin/stdout (OpenSSH's ProxyCommand, as `cloudflared access ssh`).

Bytes are copied both ways with `drain()` as back-pressure; the end of one direction becomes a
half-close of the other side (`write_eof`), and the flow is over when both directions ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys

from nbtunnel.access.client import open_carrier
from nbtunnel.access.target import AccessError, AccessTarget

log = logging.getLogger("nbtunnel.access")

CHUNK = 65536


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    n = 0
    while data := await reader.read(CHUNK):
        n += len(data)
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof() and not writer.is_closing():
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()
    return n


async def pipe(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
               b: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> tuple[int, int]:
    """Copy a->b and b->a until both directions ended (or one failed); closes both writers.
    Returns (bytes a->b, bytes b->a)."""
    tasks = [asyncio.ensure_future(_copy(a[0], b[1])), asyncio.ensure_future(_copy(b[0], a[1]))]
    try:
        pending: set[asyncio.Future[int]] = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if any(t.exception() is not None for t in done):
                break
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _, w in (a, b):
            w.close()
    counts = [t.result() if not t.cancelled() and t.exception() is None else 0 for t in tasks]
    return counts[0], counts[1]


class Forwarder:
    """`access tcp`: listen on a local address, carry each connection to the hostname."""

    def __init__(self, target: AccessTarget) -> None:
        self.target = target
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0
        self.failed = 0

    async def start(self, host: str, port: int) -> None:
        try:
            self._server = await asyncio.start_server(self._on_client, host, port)
        except OSError as exc:
            raise AccessError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc

    @property
    def sockname(self) -> tuple[str, int]:
        assert self._server is not None
        name = self._server.sockets[0].getsockname()
        return name[0], name[1]

    async def _on_client(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # owned: close() cancels and awaits it
        self.accepted += 1
        try:
            try:
                remote = await open_carrier(self.target)
            except AccessError as exc:
                self.failed += 1
                log.error("connection from %s not carried: %s",
                          writer.get_extra_info("peername"), exc)
                writer.close()
                return
            await pipe((reader, writer), remote)
        except asyncio.CancelledError:
            pass
        except Exception:  # one broken connection must not stop the listener
            log.exception("carried connection failed")
        finally:
            self._tasks.discard(task)
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


async def _stdin_reader(loop: asyncio.AbstractEventLoop
                        ) -> tuple[asyncio.StreamReader, asyncio.Task[None] | None]:
    """stdin as a StreamReader; a regular file or terminal is read by a task (returned, owned
    by the caller) through a thread, since pipe transports only take pipes and sockets."""
    reader = asyncio.StreamReader(limit=2**18)
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except ValueError:
        fd = sys.stdin.fileno()

        async def feed() -> None:
            while data := await loop.run_in_executor(None, os.read, fd, CHUNK):
                reader.feed_data(data)
            reader.feed_eof()

        return reader, loop.create_task(feed())
    return reader, None


async def _stdout_writer(loop: asyncio.AbstractEventLoop) -> asyncio.StreamWriter:
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.streams.FlowControlMixin(loop=loop),
        sys.stdout)
    return asyncio.StreamWriter(transport, protocol, None, loop)


async def run_stdio(target: AccessTarget) -> int:
    """`access ssh`: carry stdin/stdout (ProxyCommand); returns an exit status."""
    loop = asyncio.get_running_loop()
    remote = await open_carrier(target)
    stdin, feeder = await _stdin_reader(loop)
    stdout = await _stdout_writer(loop)
    try:
        await pipe((stdin, stdout), remote)
    finally:
        if feeder is not None:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
    return 0
