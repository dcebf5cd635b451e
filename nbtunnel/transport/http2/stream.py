"""One HTTP/2 stream of a tunnel connection, either role, as a ``transport.base.DataStream``.

Reads give flow-control credit back only as the caller consumes the DATA, so an unread stream
holds at most one window; writes send DATA within the peer's window. The heads are mapped
once (core/h2headers.py): the edge sends a request head and receives a response head, the
connector receives a request head (or a configuration push) and sends a response head.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING

from nbtunnel.core.h2.connection import StreamStateError
from nbtunnel.core.h2.frames import ErrorCode
from nbtunnel.core.h2headers import (
    UPGRADE_HEADER,
    Headers,
    connect_request,
    connect_response,
    request_headers,
    response_headers,
)
from nbtunnel.core.streams import ConnectionType, ConnectRequest, ConnectResponse
from nbtunnel.transport.chunks import take
from nbtunnel.transport.errors import StreamResetError, TransportError
from nbtunnel.transport.http2.configuration import H2ConfigurationPush

if TYPE_CHECKING:
    from nbtunnel.transport.base import ConfigurationPush
    from nbtunnel.transport.http2.connection import H2Connection


class H2Stream:
    """A request stream: opened by the edge (client role), accepted by the connector."""

    def __init__(self, conn: H2Connection, stream_id: int | None = None,
                 headers: Headers | None = None) -> None:
        self.conn = conn
        self.stream_id = stream_id  # None until the edge sends the request head
        self.headers: Headers = headers or []  # the request head (connector role)
        self.upgrade = ""
        """The request's cf-cloudflared-proxy-connection-upgrade, lower-cased (connector)."""
        if headers:
            for name, value in headers:
                if name == UPGRADE_HEADER:
                    self.upgrade = value.lower()
                    break
        self.sent_end = False
        self.responded = False
        # the response head (edge role): what arrived, or why none will
        self._head: Headers | None = None
        self._head_error: TransportError | None = None
        self._head_waiter: asyncio.Future[None] | None = None
        self._websocket = False
        self._chunks: deque[bytes] = deque()
        self._eof = False  # the peer's END_STREAM
        self._credited = False  # the unread bytes went back to the connection's window
        self._reset: int | None = None
        self._dead = False  # the connection ended, or a GOAWAY left this stream unprocessed
        self._waiter: asyncio.Future[None] | None = None
        self._stopped: asyncio.Future[None] | None = None  # made when first asked for
        self._stop_seen = False

    @property
    def _gone(self) -> bool:
        return self._dead or self.conn.terminated

    # -- heads (transport.base.DataStream) --------------------------------------------------
    async def send_request(self, request: ConnectRequest, *, end_stream: bool) -> None:
        headers, _ = request_headers(request)
        self._websocket = request.type == ConnectionType.WEBSOCKET
        self.send_headers(headers, end_stream=end_stream)

    async def receive_response(self) -> ConnectResponse:
        headers = await self.response_headers()
        status = next((int(v) for k, v in headers if k == ":status"), 0)
        return connect_response(status, headers, websocket=self._websocket)

    async def receive_request(self) -> ConnectRequest | ConfigurationPush | None:
        if self.upgrade == "update-configuration":
            return H2ConfigurationPush(self)
        return connect_request(self.headers, ended=self._eof)

    async def send_response(self, response: ConnectResponse) -> None:
        self.respond(response_headers(response), end_stream=bool(response.error))

    def send_headers(self, headers: Headers, *, end_stream: bool) -> None:
        """Edge role: open the stream with a request head."""
        self.stream_id = self.conn.send_request_headers(self, headers, end_stream=end_stream)
        self.sent_end = end_stream

    def respond(self, headers: Headers, *, end_stream: bool = False) -> None:
        """Connector role: the response head."""
        self._check()
        assert self.stream_id is not None
        self.responded = True
        try:
            self.conn.h2.send_headers(self.stream_id, headers, end_stream=end_stream)
        except StreamStateError as exc:
            raise TransportError(f"cannot send the response head: {exc}") from exc
        self.sent_end = end_stream
        self.conn.flush()
        if end_stream and self._eof:
            self._forget()

    async def response_headers(self) -> Headers:
        """Edge role: the raw response head (the control and configuration requests)."""
        if not self.conn.client_side:
            raise TransportError("no response comes on a stream the peer opened")
        while self._head is None:
            if self._head_error is not None:
                raise self._head_error
            # a waiter of our own: a cancelled caller leaves the head for a later one
            self._head_waiter = self.conn._loop.create_future()
            try:
                await self._head_waiter
            finally:
                self._head_waiter = None
        return self._head

    # -- bytes ------------------------------------------------------------------------------
    @property
    def readable(self) -> bool:
        return bool(self._chunks) or self._eof or self._reset is not None or self._gone

    async def read(self, n: int = 65536) -> bytes:
        """Up to `n` body bytes; b"" at END_STREAM. Credit goes back as the caller reads."""
        while not self._chunks:
            if self._eof:
                return b""
            self._check()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = take(self._chunks, n)
        if not self._credited and not self._gone and self.stream_id is not None:
            self.conn.h2.ack_data(self.stream_id, len(chunk))
            self.conn.flush()
        return chunk

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            self._check_writable()
            assert self.stream_id is not None
            core = self.conn.h2
            try:
                window = core.window(self.stream_id)
            except StreamStateError as exc:
                raise self._write_error() from exc
            size = min(window, core.max_outbound_frame_size, len(view))
            if size <= 0:
                await self.conn.wait_window()
                continue
            if type(data) is bytes:  # immutable: a slice of it is copied once, into the write
                core.send_data(self.stream_id, data if size == len(data) else view[:size])
            else:  # the caller may reuse its buffer once we return
                core.send_data(self.stream_id, bytes(view[:size]))
            view = view[size:]
            self.conn.flush()
            await self.conn.drain()

    def write_eof(self) -> None:
        if self.sent_end or self._gone or self._reset is not None or self.stream_id is None:
            return
        self.sent_end = True
        with contextlib.suppress(StreamStateError):  # the peer reset it meanwhile
            self.conn.h2.end_stream(self.stream_id)
        self.conn.flush()
        if self._eof:
            self._forget()

    def reset(self, code: int = 0) -> None:
        """RST_STREAM(CANCEL): cloudflared cancels the request and its origin request."""
        self._send_reset(ErrorCode.CANCEL, code)

    def finish(self) -> None:
        """End the control stream with RST_STREAM(NO_ERROR), as cloudflared does."""
        self._send_reset(ErrorCode.NO_ERROR, 0)

    async def wait_peer_stopped(self) -> None:
        """Resolves when the peer resets the stream (its client left) or the connection ends."""
        await asyncio.shield(self.peer_stopped())

    def peer_stopped(self) -> asyncio.Future[None]:
        if self._stopped is None:
            self._stopped = self.conn._loop.create_future()
            if self._stop_seen:
                self._stopped.set_result(None)
        return self._stopped

    def _send_reset(self, error: ErrorCode, code: int) -> None:
        if self._reset is None and not self._gone and self.stream_id is not None:
            if self.conn.h2.reset_stream(self.stream_id, error):  # False: over both ways
                self.conn.flush()
        self._reset = code
        self._stop()
        self._forget()

    # -- events from the connection -----------------------------------------------------
    def on_response(self, headers: Headers) -> None:
        if self._head is None and self._head_error is None:
            self._head = headers
            self._wake_head()

    def on_data(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
        self._wake()

    def on_end(self) -> None:
        self._eof = True
        if self.conn.client_side and self._head is None:
            self._fail_response(TransportError(
                f"the {self.conn.peer_name} ended the stream without a response"))
        self._wake()
        if self.sent_end:
            self._forget()

    def on_reset(self, code: int) -> None:
        self._reset = code
        self._fail_response(StreamResetError(code))
        self._stop()
        self._forget()

    def on_closed(self) -> None:
        self._dead = True
        self._fail_response(self.conn.closed_error())
        self._stop()

    # -- internals ------------------------------------------------------------------------
    def _check(self) -> None:
        if self._reset is not None:
            raise StreamResetError(self._reset)
        if self._gone:
            raise self.conn.closed_error()

    def _check_writable(self) -> None:
        if self._gone:
            raise self.conn.closed_error()
        if self._reset is not None:
            raise StreamResetError(self._reset)
        if self.sent_end:
            raise TransportError("the stream's write side is already closed")

    def _write_error(self) -> TransportError:
        if self._reset is not None:
            return StreamResetError(self._reset)
        if self._gone:
            return self.conn.closed_error()
        return TransportError("the HTTP/2 stream is closed")

    def _fail_response(self, exc: TransportError) -> None:
        if self._head is None and self._head_error is None:
            self._head_error = exc
            self._wake_head()

    def _wake_head(self) -> None:
        if self._head_waiter is not None and not self._head_waiter.done():
            self._head_waiter.set_result(None)

    def _stop(self) -> None:
        self._stop_seen = True
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _forget(self) -> None:
        """The stream is over on the wire (ended both ways, or reset): what it still buffers
        stops holding the connection's window now. A late reader still gets it, but none may
        come (a reset stream, a handler that answered without reading the body), and each
        such stream kept up to a window of it: after CONN_WINDOW / WINDOW of them the peer
        could send nothing on any stream of the connection."""
        if self.stream_id is not None:
            self.conn.forget(self.stream_id)
            if self._chunks and not self._credited and not self.conn.terminated:
                self._credited = True
                self.conn.h2.ack_data(self.stream_id, sum(map(len, self._chunks)))
                self.conn.flush()
