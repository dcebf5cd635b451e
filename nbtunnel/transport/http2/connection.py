"""cloudflared's HTTP/2 transport (`--protocol http2`): one connection core for both roles.

The connector dials TCP+TLS (SNI h2.cftunnel.com, no ALPN) and then, roles inverted, serves
HTTP/2: the edge is the HTTP/2 *client* and opens every stream. This shell drives the sans-I/O
connection (core/h2: frames, HPACK, flow control, stream states) as an ``asyncio.Protocol`` (no
reader task: frames are handled as they arrive, like the QUIC shell) and owns the flow-control
waiters, write back-pressure and the connection's end. The roles on top (edge.py,
connector.py) add who opens which stream, the control stream and the configuration push.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import ClassVar, cast

from nbtunnel.core.h2 import connection as h2c
from nbtunnel.core.h2.connection import H2Core, H2ProtocolError
from nbtunnel.core.h2.frames import ErrorCode, Setting
from nbtunnel.core.h2headers import Headers
from nbtunnel.transport.errors import TransportClosedError, TransportError
from nbtunnel.transport.http2.stream import H2Stream
from nbtunnel.transport.tls_buffer import trim_read_buffer

log = logging.getLogger("nbtunnel.transport.http2")

WINDOW = 1 << 20
"""Per-stream receive window; bounds what an unread stream may buffer."""
CONN_WINDOW = 16 << 20
FRAME_SIZE = 1 << 16
"""Our SETTINGS_MAX_FRAME_SIZE (the protocol's default is 16 KiB), accepted from the start: a
peer that honours it sends a 64 KiB body write as one DATA frame, one event and one
acknowledgement instead of four (bulk: about 1 ms less CPU per MB on each side). Each side
still sends no bigger frames than the other one advertised."""


ACK_FLOOD = 10_000
"""PING and SETTINGS frames answered while the peer reads none of our bytes: past this many the
connection ends (ENHANCE_YOUR_CALM) instead of queueing ACKs without bound."""


class H2Connection(asyncio.Protocol):
    """One tunnel connection over HTTP/2; subclasses fix the role."""

    protocol = "http2"
    client_side: ClassVar[bool]
    peer_name: ClassVar[str]
    """Who is on the other end, for messages: "connector" or "edge"."""
    settings: ClassVar[dict[Setting, int]]
    """Our SETTINGS, sent first (before the preface's window update)."""

    def __init__(self) -> None:
        # Heads we send are built by our own code from checked parts: the connector's response
        # heads are `:status` plus base64 and JSON fields (core/h2headers.py); the edge's
        # request heads come from a visitor's head its front parsed and checked (httptools, or
        # h2 with its inbound checks on the HTTPS front), names lower-cased and connection-
        # specific fields dropped by request_headers(), plus fields the edge adds itself.
        # Received heads are checked where they are used (connect_request, the origin client;
        # connect_response and the edge's response checks); the core checks a response's
        # `:status`.
        self.h2 = H2Core(client=self.client_side, settings=self.settings,
                         connection_window=CONN_WINDOW)
        self.streams: dict[int, H2Stream] = {}
        self.remote_address: tuple[str, int] = ("", 0)
        self.close_reason = ""
        self._transport: asyncio.Transport | None = None
        self._closed = asyncio.get_running_loop().create_future()
        self._window_waiters: list[asyncio.Future[None]] = []
        self._write_paused = False
        self._write_waiters: list[asyncio.Future[None]] = []
        self._lost = False
        self._loop = asyncio.get_running_loop()
        self._flush_handle: asyncio.Handle | None = None
        self._acks_at_pause = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.remote_address} {self.close_reason}>"

    # -- state -------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """No new streams (the roles add the peer's graceful GOAWAY)."""
        return self._closed.done()

    @property
    def terminated(self) -> bool:
        """The TCP connection is gone."""
        return self._closed.done()

    @property
    def silent_for(self) -> float:
        """cloudflared does not ping over HTTP/2, so silence says nothing: never stale."""
        return 0.0

    def closed_error(self) -> TransportClosedError:
        return TransportClosedError(
            f"the {self.peer_name} connection is closed: {self.close_reason}")

    # -- asyncio.Protocol --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport = transport
        trim_read_buffer(transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        self.remote_address = (str(peer[0]), int(peer[1]))
        self.h2.initiate()
        self.flush()

    def data_received(self, data: bytes) -> None:
        if self.terminated:
            return
        try:
            events = self.h2.receive(data)
        except H2ProtocolError as exc:
            log.warning("HTTP/2 protocol error from the %s %s: %s", self.peer_name,
                        self.remote_address, exc)
            self._flush_now()  # the GOAWAY goes before the close
            self._terminate(f"HTTP/2 protocol error: {exc}")
            return
        try:
            for event in events:
                self._on_event(event)
        except Exception as exc:  # a bug here must end this connection, nothing else
            log.exception("HTTP/2 connection with the %s failed", self.peer_name)
            self._terminate(f"internal error: {exc}")
            return
        if self._write_paused and self.h2.acks_queued - self._acks_at_pause > ACK_FLOOD:
            self.close(ErrorCode.ENHANCE_YOUR_CALM, "PING/SETTINGS flood while not reading")
            return
        self.flush()

    def eof_received(self) -> bool:
        self._terminate(f"the {self.peer_name} closed the TCP connection")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._terminate(f"connection lost: {exc}" if exc else "connection ended")
        self._wake(self._write_waiters)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._acks_at_pause = self.h2.acks_queued

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake(self._write_waiters)

    # -- used by the streams -----------------------------------------------------------------
    def flush(self) -> None:
        """Send what the core queued, once per pass of the event loop: the HEADERS, DATA and
        END_STREAM of a response (and the WINDOW_UPDATEs its reads earned) leave in one
        TLS record and one ``send()`` instead of one each."""
        if self._flush_handle is None and self.h2.has_output:  # no empty pass of the loop
            self._flush_handle = self._loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_handle = None
        out = self.h2.data_to_send()
        if out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(out)

    async def drain(self) -> None:
        """Wait while the socket's send buffer is above its high-water mark."""
        while self._write_paused and not self.terminated:
            fut = asyncio.get_running_loop().create_future()
            self._write_waiters.append(fut)
            await fut
        if self._lost:
            raise self.closed_error()

    async def wait_window(self) -> None:
        """Wait for the peer to grant flow-control credit (or the connection to end)."""
        fut = asyncio.get_running_loop().create_future()
        self._window_waiters.append(fut)
        closed = self._closed
        await asyncio.wait([fut, closed], return_when=asyncio.FIRST_COMPLETED)
        if closed.done():
            raise self.closed_error()

    def send_request_headers(self, stream: H2Stream, headers: Headers, *,
                             end_stream: bool) -> int:
        """Open a request stream with HEADERS (client role); returns its id."""
        if self.closed:
            raise self.closed_error()
        try:
            stream_id = self.h2.open_stream(headers, end_stream=end_stream)
        except h2c.StreamStateError as exc:
            raise TransportError(f"cannot open an HTTP/2 stream: {exc}") from exc
        self.streams[stream_id] = stream
        self.flush()
        return stream_id

    def forget(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)

    # -- the end -----------------------------------------------------------------------------
    def close(self, error_code: int = 0, reason: str = "") -> None:
        """GOAWAY, then close the TCP connection."""
        if not self.terminated:
            with contextlib.suppress(Exception):
                self.h2.close(error_code)
                self._flush_now()  # the GOAWAY goes before the close
            us = "edge" if self.client_side else "connector"
            self._terminate(reason or f"closed by the {us}")
        if self._transport is not None:
            self._transport.close()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    def _terminate(self, reason: str) -> None:
        if self._closed.done():
            return
        self.close_reason = reason
        self._closed.set_result(None)
        for stream in list(self.streams.values()):
            stream.on_closed()
        self._wake(self._window_waiters)
        self._on_terminated()
        if self._transport is not None:
            self._transport.close()

    def _on_terminated(self) -> None:
        """Role hook: the connection ended."""

    # -- events ------------------------------------------------------------------------------
    def _on_event(self, event: h2c.Event) -> None:
        kind = event[0]
        if kind == h2c.DATA_RECEIVED:
            stream = self.streams.get(event[1])
            if stream is None:  # nobody reads it: credit it back at once
                self.h2.ack_data(event[1], len(event[2]))
            else:
                stream.on_data(event[2])
        elif kind == h2c.HEADERS_RECEIVED:
            if self.client_side:
                if (stream := self.streams.get(event[1])) is not None:
                    stream.on_response(event[2])
                    if event[3]:
                        stream.on_end()
            else:
                self._on_request(event[1], event[2], ended=event[3])
        elif kind == h2c.STREAM_ENDED:
            if (stream := self.streams.get(event[1])) is not None:
                stream.on_end()
        elif kind == h2c.WINDOW_OPENED:
            if self._window_waiters:
                self._wake(self._window_waiters)
        elif kind == h2c.STREAM_RESET:
            if (stream := self.streams.get(event[1])) is not None:
                stream.on_reset(event[2])
            if self._window_waiters:  # a write waiting for credit on it fails now
                self._wake(self._window_waiters)
        elif kind == h2c.GOAWAY_RECEIVED:
            self._on_goaway(event[1], event[2])

    def _on_request(self, stream_id: int, headers: Headers, *, ended: bool) -> None:
        """Server role: the peer opened a request stream."""

    def _on_goaway(self, code: int, last_stream_id: int | None) -> None:
        self._terminate(f"the {self.peer_name} sent GOAWAY (code {code})")

    @staticmethod
    def _wake(waiters: list[asyncio.Future[None]]) -> None:
        pending = list(waiters)
        waiters.clear()
        for fut in pending:
            if not fut.done():
                fut.set_result(None)
