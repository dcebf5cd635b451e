"""Keep-alive HTTP/1.1 connections to an origin, parsed by httptools (llhttp, in C).

The origin client used aiohttp's ClientSession, and per proxied request that was about a
quarter of the connector's CPU (request and response objects, tracing hooks, header and
cookie machinery) for what a tunnel needs: send a head, stream a body, stream the answer
back. This module is that and no more: :class:`Http1Connection` is an asyncio protocol for
one connection (one request at a time, a fresh llhttp parser per response, back-pressure on
the response body: reading pauses while the consumer lags behind), :class:`IdlePool` keeps
the idle ones per target. Errors are left to the caller (origin.py), which phrases them as
cloudflared does.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from typing import cast

import httptools

from nbtunnel.transport.tls_buffer import trim_read_buffer

HIGH_WATER = 256 * 1024  # buffered response body at which the socket stops being read
LOW_WATER = 64 * 1024
MAX_HEAD = 1024 * 1024  # response head size limit (aiohttp's was 64 KiB per field)


class ResponseError(Exception):
    """The origin's answer broke (``kind``: "eof", "malformed" or "io"; "body" when the
    request body did not match its Content-Length; ``cause`` the underlying exception, if
    any)."""

    def __init__(self, kind: str, detail: str, cause: BaseException | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.cause = cause


class Http1Connection(asyncio.Protocol):
    """One connection; :meth:`start` before each request, then head, body, and release."""

    def __init__(self, key: object) -> None:
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self.keep_alive = False
        self.complete = True  # no response in progress
        self.got_bytes = False
        self.chunked = False  # the response has Transfer-Encoding (llhttp de-chunks it)
        self._parser: httptools.HttpResponseParser | None = None
        self._spare: httptools.HttpResponseParser | None = None  # reusable after a response
        self._extra = False
        self._no_body = False
        self._informational = False
        self._head_done = False
        self._until_close = False
        self._head_size = 0
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._head: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused_reading = False
        self._waiter: asyncio.Future[None] | None = None
        self._error: ResponseError | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused_writing = False

    # -------------------------------------------------------------------- the request side

    def start(self, no_body: bool) -> asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]]:
        """Get ready for the response to the request about to be written; the future is
        its head (what `head()` returns)."""
        self._parser = self._spare or httptools.HttpResponseParser(self)
        self._spare = None
        self._extra = False
        self._no_body = no_body  # HEAD: llhttp cannot be told, so we stop at the head
        self.complete = self._head_done = self._until_close = self.got_bytes = False
        self._informational = self.chunked = False
        self._head_size = 0
        self._headers = []
        self._head = head = self.loop.create_future()
        self._error = None
        return head

    def write(self, data: bytes) -> None:
        if self.closed or self.transport is None:
            raise ResponseError("io", "the connection is closed")
        self.transport.write(data)

    async def drain(self) -> None:
        if self.closed:
            raise ResponseError("io", "the connection is closed")
        if self._paused_writing:
            self._drain = self.loop.create_future()
            await self._drain

    async def head(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        assert self._head is not None
        return await self._head

    async def read(self) -> bytes:
        """Next piece of the response body; b"" once it is complete."""
        while True:
            data = self.read_nowait()
            if data is not None:
                return data
            if self._error is not None:
                raise self._error
            self._waiter = self.loop.create_future()
            await self._waiter

    def read_nowait(self) -> bytes | None:
        """What `read` returns without waiting: the buffered body, b"" once it is complete,
        None when it would wait (or fail)."""
        chunks = self._chunks
        if chunks:
            data = chunks.popleft() if len(chunks) == 1 else b"".join(
                chunks.popleft() for _ in range(len(chunks)))
            self._buffered -= len(data)
            if self._paused_reading and self._buffered <= LOW_WATER and self.transport:
                self._paused_reading = False
                self.transport.resume_reading()
            return data
        return b"" if self.complete else None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # --------------------------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        trim_read_buffer(transport)  # a TLS origin's

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # bytes nobody asked for: this connection cannot be trusted
            self.fail(ResponseError("malformed", "unsolicited response"))
            return
        self.got_bytes = True
        if not self._head_done:
            self._head_size += len(data)
            if self._head_size > MAX_HEAD:
                self.fail(ResponseError("malformed", "response head too large"))
                return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # a 101 to a plain request: what follows is the body, until close
        except httptools.HttpParserError as exc:
            self.fail(ResponseError("malformed", str(exc) or type(exc).__name__, exc))
            return
        if self._head_done and (self.complete or self._no_body):
            # llhttp is ready for the next response after a complete one (keep-alive); after
            # a HEAD or a body delimited otherwise the next response gets a fresh parser
            if self.complete and not self._no_body and self.keep_alive and not self._extra:
                self._spare = parser
            self._parser = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._parser = None
        if self._head_done and self._until_close and not self.complete:
            self.complete = True  # a body delimited by the end of the connection
            self._wake()
        elif not self.complete:
            kind = "io" if exc is not None else "eof"
            self.fail(ResponseError(kind, str(exc) if exc else "EOF", exc))
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # ------------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        if self.complete:  # bytes past the complete response: ignored, and the connection
            self._extra = True  # (and its parser) is not trusted with another request
            self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._extra:  # the head already handed out keeps its fields
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        if self._extra:
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._informational = True  # 103 Early Hints and the like: wait for the real one
            self._headers = []
            return
        self._head_done = True
        self.keep_alive = bool(self._parser.should_keep_alive())
        framed = False
        for k, _ in self._headers:
            k = k.lower()
            if k == b"transfer-encoding":
                framed = self.chunked = True
            elif k == b"content-length":
                framed = True
        self._until_close = not framed and status not in (204, 304) and not self._no_body
        if self._no_body:
            self.complete = True
        assert self._head is not None
        if not self._head.done():
            self._head.set_result((status, self._headers))

    def on_body(self, body: bytes) -> None:
        if self._no_body or self._extra:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused_reading and self.transport:
            self._paused_reading = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._extra:
            return
        if self._informational:
            self._informational = False
            return
        self.complete = True
        self._wake()

    # ------------------------------------------------------------------------------ helpers

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def fail(self, error: ResponseError) -> None:
        """End the exchange with ``error`` (seen by whoever waits) and close."""
        self._error = error
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        self._wake()
        self.close()


class IdlePool:
    """Idle keep-alive connections per target, newest first; closed after ``timeout`` s."""

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.clock = clock
        self._idle: dict[object, list[Http1Connection]] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def take(self, key: object) -> Http1Connection | None:
        idle = self._idle.get(key)
        now = self.clock()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.timeout:
                conn.reused = True
                return conn
            conn.close()
        return None

    def put(self, conn: Http1Connection) -> None:
        conn.idle_since = self.clock()
        self._idle.setdefault(conn.key, []).append(conn)
        if self._sweeper is None:
            self._sweeper = conn.loop.call_later(self.timeout, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = self.clock()
        loop = None
        for key, idle in list(self._idle.items()):
            keep = [c for c in idle if not c.closed and now - c.idle_since < self.timeout]
            for c in idle:
                if c not in keep:
                    c.close()
            if keep:
                self._idle[key] = keep
                loop = keep[0].loop
            else:
                del self._idle[key]
        if loop is not None:
            self._sweeper = loop.call_later(self.timeout / 2, self._sweep)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()
