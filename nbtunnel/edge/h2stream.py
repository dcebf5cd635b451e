"""Streams of an edge-side HTTP/2 connection, with the QuicStream interface the edge expects.

`H2Stream` is one request the edge opened: `write()` sends DATA within the peer's flow-control
window, `read()` returns response DATA and only then gives the window back, so an unread stream
holds at most one window here. `H2DataStream` wraps it for the exchange: it turns the written
preamble + ConnectRequest into the request HEADERS and the response HEADERS into preamble +
ConnectResponse bytes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

import h2.errors
import h2.exceptions

from nbtunnel.core.streams import ConnectRequest, HeadParser
from nbtunnel.edge.h2wire import connect_response, request_headers
from nbtunnel.transport.errors import StreamResetError, TransportClosedError, TransportError

if TYPE_CHECKING:
    from nbtunnel.edge.h2conn import H2Connection


class H2Stream:
    """One edge-initiated HTTP/2 request stream."""

    def __init__(self, conn: H2Connection, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.sent_end = False
        self._headers: asyncio.Future[list[tuple[str, str]]] = (
            asyncio.get_running_loop().create_future())
        self._chunks: deque[bytes] = deque()
        self._eof = False
        self._reset: int | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._dead = False  # the connection ended, or a GOAWAY left this stream unprocessed

    @property
    def _gone(self) -> bool:
        return self._dead or self.conn.terminated

    # -- events from the connection -------------------------------------------------------
    def on_headers(self, headers: list[tuple[str, str]]) -> None:
        if not self._headers.done():
            self._headers.set_result(headers)

    def on_data(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
        self._wake()

    def on_end(self) -> None:
        self._eof = True
        self._fail_headers(TransportError("the connector ended the stream without a response"))
        self._wake()
        if self.sent_end:
            self.conn.forget(self.stream_id)

    def on_reset(self, code: int) -> None:
        self._reset = code
        self._fail_headers(StreamResetError(code))
        self._wake()
        self.conn.forget(self.stream_id)

    def on_closed(self) -> None:
        self._dead = True
        self._fail_headers(self._closed_exc())
        self._wake()

    def _closed_exc(self) -> TransportClosedError:
        return TransportClosedError(f"the connector connection is closed: {self.conn.close_reason}")

    def _fail_headers(self, exc: TransportError) -> None:
        if not self._headers.done():
            self._headers.set_exception(exc)
            self._headers.exception()  # retrieved: a data-less stream may never ask

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- the QuicStream-like interface ----------------------------------------------------
    async def response_headers(self) -> list[tuple[str, str]]:
        return await asyncio.shield(self._headers)

    async def read(self, n: int = 65536) -> bytes:
        """Up to `n` body bytes; b"" at END_STREAM. Credit goes back as the caller reads."""
        while not self._chunks:
            if self._reset is not None:
                raise StreamResetError(self._reset)
            if self._eof:
                return b""
            if self._gone:
                raise self._closed_exc()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        if len(chunk) > n:
            self._chunks.appendleft(chunk[n:])
            chunk = chunk[:n]
        if not self._gone:
            try:
                self.conn.h2.acknowledge_received_data(len(chunk), self.stream_id)
            except h2.exceptions.StreamClosedError:
                pass  # the stream ended: only the connection window matters, h2 handles it
            self.conn.flush()
        return chunk

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            self._check_writable()
            try:
                window = self.conn.h2.local_flow_control_window(self.stream_id)
            except h2.exceptions.StreamClosedError as exc:
                raise self._write_error() from exc
            size = min(window, self.conn.h2.max_outbound_frame_size, len(view))
            if size <= 0:
                await self.conn.wait_window()
                continue
            try:
                self.conn.h2.send_data(self.stream_id, bytes(view[:size]))
            except h2.exceptions.ProtocolError as exc:
                raise self._write_error() from exc
            view = view[size:]
            self.conn.flush()
            await self.conn.drain()

    def _check_writable(self) -> None:
        if self._gone:
            raise self._closed_exc()
        if self._reset is not None:
            raise StreamResetError(self._reset)
        if self.sent_end:
            raise TransportError("the stream's write side is already closed")

    def _write_error(self) -> TransportError:
        if self._reset is not None:
            return StreamResetError(self._reset)
        if self._gone:
            return self._closed_exc()
        return TransportError("the HTTP/2 stream is closed")

    def write_eof(self) -> None:
        if self.sent_end or self._gone or self._reset is not None:
            return
        self.sent_end = True
        try:
            self.conn.h2.end_stream(self.stream_id)
        except h2.exceptions.ProtocolError as exc:
            raise self._write_error() from exc
        self.conn.flush()
        if self._eof:
            self.conn.forget(self.stream_id)

    def reset(self, code: int = 0) -> None:
        """RST_STREAM(CANCEL): cloudflared cancels the request and its origin request."""
        if self._reset is None and not self._gone:
            try:
                self.conn.h2.reset_stream(self.stream_id, h2.errors.ErrorCodes.CANCEL)
            except h2.exceptions.ProtocolError:
                pass  # already closed both ways
            self.conn.flush()
        self._reset = code
        self._wake()
        self.conn.forget(self.stream_id)


class H2DataStream:
    """The exchange's data stream: QUIC-style head bytes in and out, HTTP/2 on the wire."""

    def __init__(self, conn: H2Connection) -> None:
        self.conn = conn
        self._parser = HeadParser("request")
        self._inner: H2Stream | None = None
        self._websocket = False
        self._head_sent = False

    async def write(self, data: bytes) -> None:
        if self._inner is None:
            head = self._parser.feed(data)
            if head is None:
                return
            if not isinstance(head, ConnectRequest):
                raise TransportError("RPC streams are not carried over HTTP/2")
            headers, has_body = request_headers(head)
            self._websocket = any(n == "cf-cloudflared-proxy-connection-upgrade"
                                  for n, _ in headers)
            self._inner = self.conn.request(headers, end_stream=not has_body)
            data = self._parser.rest
            if not data:
                return
        await self._inner.write(data)

    def write_eof(self) -> None:
        if self._inner is not None:
            self._inner.write_eof()

    async def read(self, n: int = 65536) -> bytes:
        if self._inner is None:
            raise TransportError("no request was written on this stream")
        if not self._head_sent:
            headers = await self._inner.response_headers()
            status = next((int(v) for k, v in headers if k == ":status"), 0)
            self._head_sent = True
            return connect_response(status, headers, websocket=self._websocket)
        return await self._inner.read(n)

    def reset(self, code: int = 0) -> None:
        if self._inner is not None:
            self._inner.reset(code)
