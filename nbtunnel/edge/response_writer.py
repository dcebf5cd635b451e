"""The one HTTP/1.1 response writer of the public front.

Every response a visitor gets goes through :class:`ResponseWriter`: edge pages (404, 502,
524, ...), API answers and responses relayed from connectors. It decides the framing once
(Content-Length, chunked, or close-delimited for HTTP/1.0), sends no body to HEAD, 1xx, 204
and 304, adds `Cf-Ray`, and never lets a body run past its Content-Length on a connection
that is kept alive: extra bytes are cut and the connection is closed.

Output is *held* until the writer is flushed (``flush()``, ``end()``): a relay adds what its
stream has ready and flushes before it would wait, so a small response (head, body and the
last chunk) leaves in one ``send()`` instead of two or three.

A flush waits for the client to take the bytes (back-pressure), under the send deadline: a
visitor that takes no byte for `FrontLimits.send_timeout` (a slow reader, a zero TCP window)
has its connection closed, so it cannot hold the connector's origin request forever. The wait
uses the writing task's lazy `Deadline`, and only when the socket's buffer holds bytes: a
response the kernel takes at once arms nothing.

The last send of a kept-alive response goes through the front's :class:`SendBatch`: it leaves
at the next pass of the event loop, together with every other response that ended in this
pass. A send to a visitor also pays for waking the visitor's process (on loopback, its whole
TCP receive); sent back to back, the responses of one pass wake a busy client once, not once
per response (about 10 % of the edge's CPU per small request at c=50).
"""

from __future__ import annotations

import asyncio
import logging

from nbtunnel.core.http1 import LAST_CHUNK, encode_chunk, encode_head
from nbtunnel.edge.deadline import Deadline
from nbtunnel.edge.pages import error_page

log = logging.getLogger("nbtunnel.edge.front")

_NO_BODY_STATUS = frozenset({204, 304})
FLUSH_AT = 64 << 10
"""A relay flushes once it holds more than this, even while its stream has more ready."""


class SendBatch:
    """The last sends of kept-alive responses, held until the next pass of the event loop and
    then sent back to back (see the module docstring). One per front.

    Order on a connection is kept: any other send to a transport (``release``) first sends
    what the batch holds for it, and the front releases a connection before closing it.
    Nothing waits for these sends: the response is complete, so the connector's origin
    request is released already, and what the socket cannot take at once stays in asyncio's
    buffer while the connection waits for the visitor's next request (the keep-alive
    deadline bounds that; the next response's first flush waits under the send deadline).
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[asyncio.WriteTransport, bytes] = {}

    def defer(self, transport: asyncio.WriteTransport, data: bytes) -> None:
        pending = self._pending
        if not pending:
            asyncio.get_running_loop().call_soon(self.flush)
        held = pending.get(transport)
        pending[transport] = data if held is None else held + data

    def release(self, transport: asyncio.WriteTransport) -> None:
        """Send what is held for ``transport`` now (before another send to it, or a close)."""
        if self._pending:
            data = self._pending.pop(transport, None)
            if data is not None and not transport.is_closing():
                transport.write(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for transport, data in pending.items():
            if not transport.is_closing():  # aborted meanwhile (the client left)
                transport.write(data)


class ResponseWriter:
    """One response on one visitor connection."""

    __slots__ = ("_batch", "_chunked", "_ended", "_held", "_length", "_no_body", "_sent",
                 "deadline", "held", "keep_alive", "method", "overflow", "ray", "send_timeout",
                 "started", "status", "version", "writer")

    def __init__(self, writer: asyncio.StreamWriter, *, ray: str, method: str = "GET",
                 version: str = "1.1", keep_alive: bool = True,
                 deadline: Deadline | None = None, send_timeout: float = 60.0,
                 batch: SendBatch | None = None) -> None:
        self.writer = writer
        self._batch = batch
        """Where the last send of a kept-alive response goes (None: sent at once)."""
        self.deadline = deadline
        """The writing task's deadline (deadline.py): flushes wait under it. An exchange that
        relays from a task of its own sets its own while it writes."""
        self.send_timeout = send_timeout
        self.ray = ray
        self.method = method
        self.version = version
        self.keep_alive = keep_alive
        self.started = False
        self.status = 0
        self._no_body = False
        self._chunked = False
        self._length: int | None = None
        self._sent = 0
        self._ended = False
        self._held: list[bytes] = []  # written at the next flush()
        self.held = 0
        """Bytes held for the next flush."""
        self.overflow = False
        """The body ran past its Content-Length (the extra bytes were not sent)."""

    # whole responses --------------------------------------------------------------------

    def page(self, status: int, detail: str, *, as_html: bool = False, close: bool = False,
             extra: list[tuple[str, str]] | None = None) -> None:
        """An edge-generated status page (text for tools, HTML for browsers)."""
        ctype, body = error_page(status, detail, ray=self.ray, as_html=as_html)
        if close:
            self.keep_alive = False
        self.whole(status, [("Content-Type", ctype.decode()), *(extra or [])], body,
                   server=True)

    def whole(self, status: int, headers: list[tuple[str, str]], body: bytes, *,
              server: bool = True) -> None:
        """A response whose body is known: Content-Length framing."""
        headers = [*headers, ("Content-Length", str(len(body)))]
        if server:
            headers.append(("Server", "nbtunnel"))
        self.start(status, headers, length=len(body))
        self.add(body)

    # streamed responses -----------------------------------------------------------------

    def start(self, status: int, headers: list[tuple[str, str]], *, length: int | None,
              upgraded: bool = False) -> None:
        """Hold the head (it goes out with the first flush). ``headers`` are validated and
        carry no framing fields except the one Content-Length that ``length`` states; the
        writer appends its own fields to the list (it is the caller's no more)."""
        assert not self.started
        self.started = True
        self.status = status
        self._length = length
        self._no_body = not upgraded and (
            self.method == "HEAD" or status in _NO_BODY_STATUS or 100 <= status < 200)
        out = headers
        if not self._no_body and length is None and not upgraded:
            if self.version == "1.1":
                self._chunked = True
                out.append(("Transfer-Encoding", "chunked"))
            else:
                self.keep_alive = False  # HTTP/1.0: the body ends when the connection does
        out.append(("Cf-Ray", self.ray))
        if not self.keep_alive and not upgraded:
            out.append(("Connection", "close"))
        head = encode_head(status, out)
        self._held.append(head)
        self.held += len(head)

    async def flush(self) -> None:
        """Send what is held, with back-pressure."""
        if self._held:
            self._send()
            writer = self.writer
            if self.deadline is None or not writer.transport.get_write_buffer_size():
                await writer.drain()  # nothing buffered: it does not wait
            else:
                await self._wait_for_client(self.deadline)

    async def _wait_for_client(self, deadline: Deadline) -> None:
        """Wait until the socket's buffer is low again; ConnectionResetError (and the
        connection closed) once the client has taken no byte for `send_timeout` seconds."""
        writer = self.writer
        transport = writer.transport
        left = transport.get_write_buffer_size()
        loop = asyncio.get_running_loop()
        deadline.arm(loop.time() + self.send_timeout)
        try:
            while True:
                try:
                    await writer.drain()
                    return
                except asyncio.CancelledError:
                    if not deadline.expired():
                        raise
                before, left = left, transport.get_write_buffer_size()
                if left >= before:
                    log.debug("response %s: the client took no byte for %g s; closed",
                              self.ray, self.send_timeout)
                    self.keep_alive = False
                    transport.abort()
                    raise ConnectionResetError(
                        f"the client took no byte for {self.send_timeout:g} s")
                deadline.arm(loop.time() + self.send_timeout)  # slow but moving: wait on
        finally:
            deadline.disarm()

    def _take(self) -> bytes:
        held = self._held
        data = held[0] if len(held) == 1 else b"".join(held)
        held.clear()
        self.held = 0
        return data

    def _send(self) -> None:
        if self._batch is not None:
            self._batch.release(self.writer.transport)  # what it holds goes first
        self.writer.write(self._take())

    async def body(self, data: bytes) -> bool:
        """Send body bytes (and the held head) with back-pressure; False once the body must
        stop (see ``add``)."""
        more = self.add(data)
        await self.flush()
        return more

    def add(self, data: bytes) -> bool:
        """Hold body bytes; False once the body must stop (it reached a stated
        Content-Length: whatever comes after is not sent)."""
        if self._no_body or not data:
            return True
        if self._length is not None and self._sent + len(data) > self._length:
            data = data[: self._length - self._sent]
            self.overflow = True
            self.keep_alive = False
        self._sent += len(data)
        if data:
            if self._chunked:
                data = encode_chunk(data)
            self._held.append(data)
            self.held += len(data)
        return not self.overflow

    async def end(self) -> bool:
        """Finish the body; returns whether the connection may carry another request."""
        if self._ended:
            return self.keep_alive
        self._ended = True
        if self._chunked:
            self._held.append(LAST_CHUNK)
        if self._length is not None and not self._no_body and self._sent != self._length:
            self.keep_alive = False  # short body: the visitor sees the truncation, then EOF
        if self._held:
            if self.keep_alive and self._batch is not None:
                self._batch.defer(self.writer.transport, self._take())
                return True
            self._send()
        try:
            if self.deadline is None or not self.writer.transport.get_write_buffer_size():
                await self.writer.drain()
            else:
                await self._wait_for_client(self.deadline)
        except ConnectionError:
            pass
        return self.keep_alive

    def abort(self) -> None:
        """A relayed body broke: reset the connection so a truncated body never looks whole."""
        self._held.clear()
        self.held = 0
        self.keep_alive = False
        if self._batch is not None:
            self._batch.release(self.writer.transport)  # an earlier response is whole
        self.writer.transport.abort()
