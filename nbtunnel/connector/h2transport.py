"""cloudflared's HTTP/2 transport (`--protocol http2`), seen from the connector.

We dial TCP+TLS (SNI h2.cftunnel.com, no ALPN, the edge CA) and then, roles inverted, serve
HTTP/2: the edge is the client and opens every stream. `H2ServerConnection` owns the h2 state
machine and its reader task; `H2ServerStream` is one edge request with a read/write interface
that gives flow-control credit back only as the caller reads, so a slow origin bounds buffering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from nbtunnel.transport.errors import (
    HandshakeError,
    StreamResetError,
    TransportClosedError,
    TransportError,
)

log = logging.getLogger("nbtunnel.connector.h2")

SERVER_NAME = "h2.cftunnel.com"
DIAL_TIMEOUT = 15.0  # cloudflared's TCP dial timeout
WINDOW = 1 << 20
CONN_WINDOW = 16 << 20
CANCEL = 0x8  # RST_STREAM CANCEL: a refused or failed request


async def dial_http2(host: str, port: int, cafile: str | None,
                     server_name: str = SERVER_NAME,
                     cadata: bytes | None = None) -> H2ServerConnection:
    """TLS to the edge (no ALPN, as cloudflared) and start serving HTTP/2 on it.

    Trust: cafile and/or cadata (PEM) together; neither means the system store."""
    ctx = ssl.create_default_context(
        cafile=cafile, cadata=cadata.decode("ascii") if cadata else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        async with asyncio.timeout(DIAL_TIMEOUT):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ctx, server_hostname=server_name)
    except (OSError, TimeoutError) as exc:
        raise HandshakeError(f"HTTP/2 dial to {host}:{port} failed: "
                             f"{exc or type(exc).__name__}", exc) from exc
    conn = H2ServerConnection(reader, writer)
    conn.start()
    return conn


class H2ServerConnection:
    """One connection to the edge over HTTP/2, where we are the server."""

    protocol = "http2"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        self.streams: dict[int, H2ServerStream] = {}
        self.close_reason = ""
        self._accepted: asyncio.Queue[H2ServerStream | None] = asyncio.Queue()
        self._closed = asyncio.get_running_loop().create_future()
        self._window_waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed.done()

    def start(self) -> None:
        """Send our SETTINGS and start the reader task (owned here; `close()` ends it)."""
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW,
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 2**31 - 1})
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONN_WINDOW)
        self.flush()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def flush(self) -> None:
        out = self.h2.data_to_send()
        if out and not self._writer.is_closing():
            self._writer.write(out)

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except ConnectionError as exc:
            self._terminate(f"connection lost: {exc}")
            raise TransportClosedError("the edge connection is closed", exc) from exc

    async def accept_stream(self) -> H2ServerStream:
        """The next request the edge opened; TransportClosedError once the connection ends."""
        stream = await self._accepted.get()
        if stream is None:
            self._accepted.put_nowait(None)
            raise TransportClosedError(f"the edge connection is closed: {self.close_reason}")
        return stream

    async def wait_window(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._window_waiters.append(fut)
        await asyncio.wait([fut, self._closed], return_when=asyncio.FIRST_COMPLETED)
        if self.closed:
            raise TransportClosedError(f"the edge connection is closed: {self.close_reason}")

    def _wake_writers(self) -> None:
        waiters, self._window_waiters = self._window_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """GOAWAY, close TCP and stop the reader."""
        if not self.closed:
            with contextlib.suppress(Exception):
                self.h2.close_connection(error_code)
                self.flush()
            self._terminate(reason or "closed by the connector")
        self._writer.close()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    def _terminate(self, reason: str) -> None:
        if self.closed:
            return
        self.close_reason = reason
        self._closed.set_result(None)
        self._accepted.put_nowait(None)
        for stream in list(self.streams.values()):
            stream.on_closed()
        self._wake_writers()

    async def _run(self) -> None:
        try:
            while not self.closed:
                data = await self._reader.read(65536)
                if not data:
                    self._terminate("the edge closed the TCP connection")
                    break
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    log.warning("HTTP/2 protocol error from the edge: %s", exc)
                    self.close(1, f"HTTP/2 protocol error: {exc}")
                    break
                for event in events:
                    self._on_event(event)
                self.flush()
        except (ConnectionError, OSError) as exc:
            self._terminate(f"connection lost: {exc}")
        except Exception as exc:  # a bug here must end this connection, not the connector
            log.exception("HTTP/2 connection to the edge failed")
            self._terminate(f"internal error: {exc}")
        finally:
            self._terminate(self.close_reason or "connection ended")
            self._writer.close()

    def _on_event(self, event: Any) -> None:
        sid = getattr(event, "stream_id", None)
        stream = self.streams.get(sid) if sid else None
        if isinstance(event, h2.events.RequestReceived):
            stream = H2ServerStream(self, event.stream_id,
                                    [(str(n), str(v)) for n, v in event.headers])
            self.streams[event.stream_id] = stream
            if event.stream_ended is not None:
                stream.on_end()
            self._accepted.put_nowait(stream)
        elif isinstance(event, h2.events.DataReceived):
            pad = event.flow_controlled_length - len(event.data)
            if stream is None:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                return
            if pad:
                self.h2.acknowledge_received_data(pad, event.stream_id)
            stream.on_data(event.data)
        elif isinstance(event, h2.events.StreamEnded) and stream is not None:
            stream.on_end()
        elif isinstance(event, h2.events.StreamReset) and stream is not None:
            stream.on_reset(event.error_code)
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._wake_writers()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._terminate(f"the edge sent GOAWAY (code {int(event.error_code or 0)})")


class H2ServerStream:
    """One edge request: `read()` gives its body, `respond()` + `write()` the response."""

    def __init__(self, conn: H2ServerConnection, stream_id: int,
                 headers: list[tuple[str, str]]) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.headers = headers
        self.responded = False
        self.sent_end = False
        self.ended = False  # the request body is complete
        self._chunks: deque[bytes] = deque()
        self._reset: int | None = None
        self._dead = False
        self._waiter: asyncio.Future[None] | None = None
        self._stopped = asyncio.get_running_loop().create_future()

    def header(self, name: str) -> str:
        return next((v for n, v in self.headers if n == name), "")

    # -- events from the connection ---------------------------------------------------------
    def on_data(self, data: bytes) -> None:
        if data:
            self._chunks.append(data)
        self._wake()

    def on_end(self) -> None:
        self.ended = True
        self._wake()

    def on_reset(self, code: int) -> None:
        self._reset = code
        self._stop()
        self._forget()

    def on_closed(self) -> None:
        self._dead = True
        self._stop()

    def _stop(self) -> None:
        if not self._stopped.done():
            self._stopped.set_result(None)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _forget(self) -> None:
        self.conn.streams.pop(self.stream_id, None)

    def _check(self) -> None:
        if self._reset is not None:
            raise StreamResetError(self._reset)
        if self._dead:
            raise TransportClosedError(f"the edge connection is closed: {self.conn.close_reason}")

    # -- the stream interface -----------------------------------------------------------------
    async def read(self, n: int = 65536) -> bytes:
        """Up to `n` request-body bytes; b"" at END_STREAM. Credit goes back as we read."""
        while not self._chunks:
            if self.ended:
                return b""
            self._check()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        if len(chunk) > n:
            self._chunks.appendleft(chunk[n:])
            chunk = chunk[:n]
        if not self._dead:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.conn.h2.acknowledge_received_data(len(chunk), self.stream_id)
            self.conn.flush()
        return chunk

    def respond(self, headers: list[tuple[str, str]], *, end_stream: bool = False) -> None:
        self._check()
        self.responded = True
        try:
            self.conn.h2.send_headers(self.stream_id, headers, end_stream=end_stream)
        except h2.exceptions.ProtocolError as exc:
            raise TransportError(f"cannot send the response head: {exc}") from exc
        self.sent_end = end_stream
        self.conn.flush()
        if end_stream:
            self._forget_if_done()

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            self._check()
            try:
                window = self.conn.h2.local_flow_control_window(self.stream_id)
            except h2.exceptions.ProtocolError as exc:
                raise TransportError("the HTTP/2 stream is closed") from exc
            size = min(window, self.conn.h2.max_outbound_frame_size, len(view))
            if size <= 0:
                await self.conn.wait_window()
                continue
            try:
                self.conn.h2.send_data(self.stream_id, bytes(view[:size]))
            except h2.exceptions.ProtocolError as exc:
                raise TransportError(f"the HTTP/2 stream is closed: {exc}") from exc
            view = view[size:]
            self.conn.flush()
            await self.conn.drain()

    def write_eof(self) -> None:
        if self.sent_end or self._dead or self._reset is not None:
            return
        self.sent_end = True
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.conn.h2.end_stream(self.stream_id)
        self.conn.flush()
        self._forget_if_done()

    def _forget_if_done(self) -> None:
        if self.ended:
            self._forget()

    def reset(self, code: int = 0) -> None:
        """RST_STREAM: NO_ERROR for code 0 (cloudflared ends its control stream so), else CANCEL."""
        if self._reset is None and not self._dead:
            err = h2.errors.ErrorCodes.NO_ERROR if code == 0 else h2.errors.ErrorCodes.CANCEL
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.conn.h2.reset_stream(self.stream_id, err)
            self.conn.flush()
        self._reset = code
        self._stop()
        self._forget()

    async def wait_peer_stopped(self) -> None:
        """Resolves when the edge resets the stream (its client left) or the connection ends."""
        await asyncio.shield(self._stopped)
