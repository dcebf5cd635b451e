"""cloudflared's HTTP/2 transport (`--protocol http2`): one connection core for both roles.

The connector dials TCP+TLS (SNI h2.cftunnel.com, no ALPN) and then, roles inverted, serves
HTTP/2: the edge is the HTTP/2 *client* (h2's ``client_side``) and opens every stream. This
core owns the h2 state machine as an ``asyncio.Protocol`` (no reader task: frames are handled
as they arrive, like the QUIC shell), flow-control waiters, write back-pressure and the
connection's end. The roles on top (edge.py, connector.py) add who opens which stream, the
control stream and the configuration push.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, ClassVar, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hpack import NeverIndexedHeaderTuple

from nbtunnel.core.h2headers import Headers
from nbtunnel.transport.errors import TransportClosedError, TransportError
from nbtunnel.transport.http2.stream import H2Stream
from nbtunnel.transport.tls_buffer import trim_read_buffer

log = logging.getLogger("nbtunnel.transport.http2")

WINDOW = 1 << 20
"""Per-stream receive window; bounds what an unread stream may buffer."""
CONN_WINDOW = 16 << 20
FRAME_SIZE = 1 << 16
"""Our SETTINGS_MAX_FRAME_SIZE (the protocol's default is 16 KiB): a peer that honours it
sends a 64 KiB body write as one DATA frame, one h2 event and one acknowledgement instead of
four (bulk: about 1 ms less CPU per MB on each side). Not more: h2's frame buffer copies a
partly received frame at every socket read, so 256 KiB frames cost the receiver more than
they save. Each side still sends no bigger frames than the other one advertised."""


_NEVER_INDEXED = frozenset({b"cf-ray", b"authorization", b"proxy-authorization", b"cookie"})
"""Request fields sent as never-indexed HPACK literals. ``cf-ray`` differs in every request:
in the table it would push out a field that repeats (and lengthen every later search of the
table, a Python loop in hpack). Credentials and cookies stay out of the compression context
shared by every visitor's requests (what h2's outbound normalization did: nghttp2's and
Firefox's rule, against compression oracles)."""


class H2Connection(asyncio.Protocol):
    """One tunnel connection over HTTP/2; subclasses fix the role."""

    protocol = "http2"
    client_side: ClassVar[bool]
    peer_name: ClassVar[str]
    """Who is on the other end, for messages: "connector" or "edge"."""
    settings: ClassVar[dict[h2.settings.SettingCodes, int]]
    """Our SETTINGS, sent first (before the preface's window update)."""
    validate_inbound: ClassVar[bool] = True
    """h2's checks of each received header block (a chain of generators per field)."""

    def __init__(self) -> None:
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=self.client_side, header_encoding=None,  # bytes: see _text
            validate_inbound_headers=self.validate_inbound,
            # Every head we send is built by our own code from checked parts (h2's per-field
            # generator chain was ~10 % of each side's CPU per request): the connector's
            # response heads are `:status` plus base64 and JSON fields (core/h2headers.py); the
            # edge's request heads come from a visitor's head that its front parsed and
            # checked (httptools, or h2 with its inbound checks on the HTTPS front), with
            # names lower-cased and connection-specific fields dropped by request_headers(),
            # plus fields the edge adds itself. The receiving side checks what it receives.
            validate_outbound_headers=False, normalize_outbound_headers=False))
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
        self.h2.local_settings = h2.settings.Settings(client=self.client_side,
                                                      initial_values=self.settings)
        # h2 applies a MAX_FRAME_SIZE only when it changes at the peer's ACK, and initial
        # values never change: accept what we announce from the start
        self.h2.max_inbound_frame_size = self.h2.local_settings.max_frame_size
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONN_WINDOW)
        self.flush()

    def data_received(self, data: bytes) -> None:
        if self.terminated:
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.warning("HTTP/2 protocol error from the %s %s: %s", self.peer_name,
                        self.remote_address, exc)
            self.close(1, f"HTTP/2 protocol error: {exc}")
            return
        for event in events:
            try:
                self._on_event(event)
            except Exception as exc:  # a bug here must end this connection, nothing else
                log.exception("HTTP/2 connection with the %s failed", self.peer_name)
                self._terminate(f"internal error: {exc}")
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

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake(self._write_waiters)

    # -- used by the streams -----------------------------------------------------------------
    def flush(self) -> None:
        """Send what h2 queued, once per pass of the event loop: the HEADERS, DATA and
        END_STREAM of a response (and the WINDOW_UPDATEs its reads earned) leave in one
        TLS record and one ``send()`` instead of one each."""
        if self._flush_handle is None:
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
        stream_id = self.h2.get_next_available_stream_id()
        self.streams[stream_id] = stream
        # values may carry raw (non-UTF-8) bytes as surrogate escapes: send those bytes
        raw = [(n.encode("latin-1"), v.encode("utf-8", "surrogateescape")) for n, v in headers]
        raw = [NeverIndexedHeaderTuple(*f) if f[0] in _NEVER_INDEXED else f for f in raw]
        try:
            self.h2.send_headers(stream_id, raw, end_stream=end_stream)
        except h2.exceptions.ProtocolError as exc:
            del self.streams[stream_id]
            raise TransportError(f"cannot open an HTTP/2 stream: {exc}") from exc
        self.flush()
        return stream_id

    def forget(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)

    # -- the end -----------------------------------------------------------------------------
    def close(self, error_code: int = 0, reason: str = "") -> None:
        """GOAWAY, then close the TCP connection."""
        if not self.terminated:
            with contextlib.suppress(Exception):
                self.h2.close_connection(error_code)
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
    def _on_event(self, event: Any) -> None:
        sid = getattr(event, "stream_id", None)
        stream = self.streams.get(sid) if sid else None
        if isinstance(event, h2.events.RequestReceived):
            self._on_request(event.stream_id, _text(event.headers),
                             ended=event.stream_ended is not None)
        elif isinstance(event, h2.events.ResponseReceived) and stream is not None:
            stream.on_response(_text(event.headers))
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
            self._wake(self._window_waiters)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(int(event.error_code or 0), event.last_stream_id)

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


def _text(headers: list[tuple[bytes, bytes]]) -> Headers:
    """Received fields as text; bytes that are not UTF-8 (a visitor's Latin-1) are kept as
    surrogate escapes instead of failing the whole connection."""
    return [(bytes(n).decode("utf-8", "surrogateescape"),
             bytes(v).decode("utf-8", "surrogateescape")) for n, v in headers]
