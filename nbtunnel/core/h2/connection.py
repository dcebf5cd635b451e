"""A lean sans-I/O HTTP/2 connection (RFC 9113) for the tunnel's HTTP/2 transport, both roles.

Bytes in (:meth:`H2Core.receive`), events and bytes out (:meth:`H2Core.data_to_send`). It holds
what the tunnel needs and what a conforming peer may send: frame parsing bounded by our
SETTINGS_MAX_FRAME_SIZE, the client preface, SETTINGS (changes mid-connection included, unknown
identifiers ignored) and their ACKs, PING answers, WINDOW_UPDATE and flow control both ways,
RST_STREAM, GOAWAY, padding, PRIORITY (read and ignored), CONTINUATION (bounded), unknown frame
types (ignored), stream states. A peer that breaks the protocol gets a GOAWAY with the RFC's
error code (:class:`H2ProtocolError` raised to the caller) or, where the RFC says so, a
RST_STREAM for one stream. Heads go through :mod:`nbtunnel.core.h2.hpack`.

Why not the ``h2`` library: its per-frame state machine, event objects, per-field generator
chains and debug logging were about a third of the connector's CPU per small request. The
public HTTPS front still uses h2 (with h2guard): this module talks only to an authenticated
tunnel peer.
"""

from __future__ import annotations

from typing import Any

from nbtunnel.core.h2 import frames as f
from nbtunnel.core.h2.frames import ErrorCode, Setting
from nbtunnel.core.h2.hpack import Decoder, Encoder, Field, HpackError, OversizedError

HEADERS_RECEIVED = 0
"""(kind, stream id, fields, ended): a request (server role) or a final response (client)."""
DATA_RECEIVED = 1
"""(kind, stream id, data): padding is already credited back, the data is not."""
STREAM_ENDED = 2
"""(kind, stream id): END_STREAM on DATA or trailers (trailer fields are dropped)."""
STREAM_RESET = 3
"""(kind, stream id, error code): the peer's RST_STREAM, or ours for its stream error."""
WINDOW_OPENED = 4
"""(kind,): the peer granted send credit (WINDOW_UPDATE, SETTINGS)."""
GOAWAY_RECEIVED = 5
"""(kind, error code, last stream id)."""

Event = tuple[Any, ...]


class H2ProtocolError(Exception):
    """A connection error: the GOAWAY is queued, the connection is over."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{message} ({code.name})")
        self.code = code


class StreamStateError(Exception):
    """A send on a stream that is reset, unknown, or whose sending side is closed."""


class _Stream:
    __slots__ = ("head_seen", "local_closed", "recv_window", "remote_closed", "send_window",
                 "unacked")

    def __init__(self, send_window: int, recv_window: int) -> None:
        self.send_window = send_window
        self.recv_window = recv_window
        self.unacked = 0
        self.local_closed = False
        self.remote_closed = False
        self.head_seen = False


class H2Core:
    """One HTTP/2 connection's state; ``client`` picks the role."""

    def __init__(self, *, client: bool, settings: dict[Setting, int], connection_window: int = 0,
                 max_header_list_size: int = 65536) -> None:
        self.client = client
        self.local_settings = dict(settings)
        self.local_initial_window = settings.get(Setting.INITIAL_WINDOW_SIZE, f.DEFAULT_WINDOW)
        self.max_inbound_frame_size = settings.get(Setting.MAX_FRAME_SIZE, f.MIN_FRAME_SIZE)
        self._max_concurrent = settings.get(Setting.MAX_CONCURRENT_STREAMS, 2**31)
        self._connection_window = connection_window
        self.decoder = Decoder(settings.get(Setting.HEADER_TABLE_SIZE, 4096),
                               max_header_list_size)
        self.encoder = Encoder()
        self.max_block = 4 * max_header_list_size + 1024
        self.streams: dict[int, _Stream] = {}
        self.next_stream_id = 1 if client else 2
        self.last_peer_stream_id = 0
        self.peer_initial_window = f.DEFAULT_WINDOW
        self.peer_max_concurrent = 2**31
        self.max_outbound_frame_size = f.MIN_FRAME_SIZE
        self.send_window = f.DEFAULT_WINDOW
        self.recv_window = f.DEFAULT_WINDOW + connection_window
        self._conn_unacked = 0
        self._conn_threshold = max(self.recv_window // 2, 1)
        self._stream_threshold = max(self.local_initial_window // 2, 1)
        self.acks_queued = 0
        """PING and SETTINGS ACKs queued so far (the shell's flood check)."""
        self.goaway_sent = False
        self.goaway_received = False
        self.closed = False
        self._out: list[bytes | memoryview] = []
        self._pending: list[bytes] = []  # a partial frame (or preface), as received
        self._pending_size = 0
        self._need = 0  # bytes the partial frame needs in all
        self._need_preface = not client
        self._need_settings = True
        self._events: list[Event] = []
        self._block_sid = 0  # a header block waits for CONTINUATION on this stream
        self._block: list[bytes] = []
        self._block_size = 0
        self._block_flags = 0
        self._block_bad = False

    # -- output ----------------------------------------------------------------------------
    def initiate(self) -> None:
        """The preface (client), our SETTINGS and the connection window's increment."""
        if self.client:
            self._out.append(f.PREFACE)
        self._out.append(f.settings_frame({int(k): v for k, v in self.local_settings.items()}))
        if self._connection_window:
            self._out.append(f.window_update(0, self._connection_window))

    @property
    def has_output(self) -> bool:
        """Frames are queued for :meth:`data_to_send`."""
        return bool(self._out)

    def data_to_send(self) -> bytes:
        out = self._out
        if len(out) == 1 and type(out[0]) is bytes:  # one frame of ours: no copy
            data = out[0]
        else:
            data = b"".join(out)
        out.clear()
        return data

    # -- sending ---------------------------------------------------------------------------
    def open_stream(self, fields: list[Field], *, end_stream: bool) -> int:
        """Client role: a new stream with its request head; returns its id."""
        if self.closed or self.goaway_received:
            raise StreamStateError("the connection takes no new streams")
        if len(self.streams) >= self.peer_max_concurrent:
            raise StreamStateError(f"the peer allows {self.peer_max_concurrent} streams")
        sid = self.next_stream_id
        if sid > f.MAX_WINDOW:
            raise StreamStateError("stream ids are exhausted")
        self.next_stream_id = sid + 2
        stream = _Stream(self.peer_initial_window, self.local_initial_window)
        stream.local_closed = end_stream
        self.streams[sid] = stream
        self._send_block(sid, fields, end_stream)
        return sid

    def send_headers(self, sid: int, fields: list[Field], *, end_stream: bool) -> None:
        """A head on an open stream (the server's response)."""
        stream = self._sendable(sid)
        self._send_block(sid, fields, end_stream)
        if end_stream:
            stream.local_closed = True
            self._forget_if_done(sid, stream)

    def window(self, sid: int) -> int:
        """How many DATA bytes may go out on ``sid`` now (frame size aside)."""
        stream = self._sendable(sid)
        return min(self.send_window, stream.send_window)

    def send_data(self, sid: int, data: bytes | memoryview, *, end_stream: bool = False) -> None:
        """One DATA frame; ``data`` must fit :meth:`window` and the peer's frame size. It is
        kept until :meth:`data_to_send`: a view must be of bytes that do not change."""
        stream = self._sendable(sid)
        n = len(data)
        # an empty DATA (END_STREAM) always goes: a stream's window may be negative (RFC 9113
        # §6.9.2, the peer shrank SETTINGS_INITIAL_WINDOW_SIZE)
        if n and (n > self.send_window or n > stream.send_window
                  or n > self.max_outbound_frame_size):
            raise ValueError("DATA beyond the flow-control window or the frame size")
        self.send_window -= n
        stream.send_window -= n
        # header and payload queued apart: the payload is copied once, by data_to_send's join
        self._out.append(f.HEADER.pack(n << 8 | f.DATA, f.END_STREAM if end_stream else 0, sid))
        if n:
            self._out.append(data)
        if end_stream:
            stream.local_closed = True
            self._forget_if_done(sid, stream)

    def end_stream(self, sid: int) -> None:
        self.send_data(sid, b"", end_stream=True)

    def reset_stream(self, sid: int, code: int) -> bool:
        """RST_STREAM for a stream still known; False when it is already over."""
        if self.streams.pop(sid, None) is None:
            return False
        self._out.append(f.rst_stream(sid, code))
        return True

    def ack_data(self, sid: int, n: int) -> None:
        """``n`` received DATA bytes were consumed: credit them back (batched, half a window
        at a time) to the connection and, while the peer may still send on it, the stream."""
        if n <= 0:
            return
        self._conn_unacked += n
        if self._conn_unacked >= self._conn_threshold:
            self._out.append(f.window_update(0, self._conn_unacked))
            self.recv_window += self._conn_unacked
            self._conn_unacked = 0
        stream = self.streams.get(sid)
        if stream is not None and not stream.remote_closed:
            stream.unacked += n
            if stream.unacked >= self._stream_threshold:
                self._out.append(f.window_update(sid, stream.unacked))
                stream.recv_window += stream.unacked
                stream.unacked = 0

    def close(self, code: int = 0, debug: bytes = b"") -> None:
        """GOAWAY: no stream after the last one the peer opened will be processed."""
        if not self.goaway_sent:
            self.goaway_sent = True
            self._out.append(f.goaway(self.last_peer_stream_id, code, debug[:256]))

    def _sendable(self, sid: int) -> _Stream:
        stream = self.streams.get(sid)
        if stream is None:
            raise StreamStateError(f"stream {sid} is closed")
        if stream.local_closed:
            raise StreamStateError(f"stream {sid} already ended its sending side")
        return stream

    def _send_block(self, sid: int, fields: list[Field], end_stream: bool) -> None:
        block = self.encoder.encode(fields)
        flags = f.END_STREAM if end_stream else 0
        size = self.max_outbound_frame_size
        if len(block) <= size:
            self._out.append(f.frame(f.HEADERS, flags | f.END_HEADERS, sid, block))
            return
        self._out.append(f.frame(f.HEADERS, flags, sid, block[:size]))
        for i in range(size, len(block), size):
            last = i + size >= len(block)
            self._out.append(f.frame(f.CONTINUATION, f.END_HEADERS if last else 0, sid,
                                     block[i:i + size]))

    def _forget_if_done(self, sid: int, stream: _Stream) -> None:
        if stream.local_closed and stream.remote_closed:
            self.streams.pop(sid, None)

    # -- receiving -------------------------------------------------------------------------
    def receive(self, data: bytes) -> list[Event]:
        """Events for ``data``; raises :class:`H2ProtocolError` (GOAWAY queued) when the peer
        broke the protocol. A partial frame is kept as received pieces and joined once it is
        whole (not copied again at every read)."""
        if self.closed or not data:
            return []
        if self._pending:
            self._pending.append(data)
            self._pending_size += len(data)
            if self._pending_size < self._need:
                return []
            data = b"".join(self._pending)
            self._pending = []
        events: list[Event] = []
        self._events = events
        try:
            pos = 0
            if self._need_preface:
                if len(data) < len(f.PREFACE):
                    if not f.PREFACE.startswith(data):
                        raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR, "no HTTP/2 preface")
                    self._keep(data, len(f.PREFACE))
                    return events
                if not data.startswith(f.PREFACE):
                    raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR, "no HTTP/2 client preface")
                self._need_preface = False
                pos = len(f.PREFACE)
            n = len(data)
            unpack = f.HEADER.unpack_from
            limit = self.max_inbound_frame_size
            need = f.HEADER_SIZE
            while n - pos >= f.HEADER_SIZE:
                lt, flags, sid = unpack(data, pos)
                length = lt >> 8
                if length > limit:
                    raise H2ProtocolError(ErrorCode.FRAME_SIZE_ERROR,
                                          f"a {length}-byte frame (we take {limit})")
                end = pos + f.HEADER_SIZE + length
                if end > n:
                    need = f.HEADER_SIZE + length
                    break
                self._frame(lt & 0xFF, flags, sid & f.MAX_WINDOW, data[pos + f.HEADER_SIZE:end])
                if self.closed:
                    return events
                pos = end
            if pos < n:
                self._keep(data[pos:], need)
        except HpackError as exc:  # an oversized head is a stream error (_too_large)
            err = H2ProtocolError(ErrorCode.COMPRESSION_ERROR, f"bad header block: {exc}")
            self._fail(err.code, str(err))
            raise err from exc
        except H2ProtocolError as exc:
            self._fail(exc.code, str(exc))
            raise
        return events

    def _keep(self, rest: bytes, need: int) -> None:
        self._pending = [rest]
        self._pending_size = len(rest)
        self._need = need

    def _fail(self, code: ErrorCode, message: str) -> None:
        self.close(code, message.encode("ascii", "replace"))
        self.closed = True
        self._pending = []

    def _frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        if self._block_sid:
            if kind != f.CONTINUATION or sid != self._block_sid:
                raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR,
                                      "a frame inside a header block (CONTINUATION expected)")
            self._continuation(flags, payload)
            return
        if self._need_settings:
            if kind != f.SETTINGS or flags & f.ACK:
                raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR, "the first frame is not SETTINGS")
            self._need_settings = False
        if kind == f.DATA:
            self._data(flags, sid, payload)
        elif kind == f.HEADERS:
            self._headers(flags, sid, payload)
        elif kind == f.WINDOW_UPDATE:
            self._window_update(sid, payload)
        elif kind == f.RST_STREAM:
            self._rst_stream(sid, payload)
        elif kind == f.SETTINGS:
            self._settings(flags, sid, payload)
        elif kind == f.PING:
            self._ping(flags, sid, payload)
        elif kind == f.GOAWAY:
            self._goaway(sid, payload)
        elif kind == f.PRIORITY:
            if sid == 0:
                raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                self._stream_error(sid, ErrorCode.FRAME_SIZE_ERROR)
        elif kind == f.PUSH_PROMISE:
            raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE (push is off)")
        elif kind == f.CONTINUATION:
            raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        # any other type is an extension: ignored (RFC 9113 §4.1)

    def _idle(self, sid: int) -> bool:
        """Whether ``sid`` was never opened (by either side)."""
        if (sid & 1) == self.client:  # one of ours: the client's ids are odd
            return sid >= self.next_stream_id
        return sid > self.last_peer_stream_id

    def _stream_error(self, sid: int, code: ErrorCode) -> None:
        self._out.append(f.rst_stream(sid, code))
        if self.streams.pop(sid, None) is not None:
            self._events.append((STREAM_RESET, sid, int(code)))

    def _data(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        length = len(payload)
        if length > self.recv_window:
            raise H2ProtocolError(ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self.recv_window -= length
        data = payload
        if flags & f.PADDED:
            if not length or payload[0] >= length:
                raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR, "padding longer than the frame")
            data = payload[1:length - payload[0]]
        stream = self.streams.get(sid)
        if stream is None:
            if self._idle(sid):
                raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            self.ack_data(0, length)  # a stream that is over: the connection's credit only
            return
        if stream.remote_closed or not stream.head_seen or length > stream.recv_window:
            self.ack_data(0, length)
            self._stream_error(sid, ErrorCode.STREAM_CLOSED if stream.remote_closed else
                               ErrorCode.FLOW_CONTROL_ERROR if stream.head_seen else
                               ErrorCode.PROTOCOL_ERROR)
            return
        stream.recv_window -= length
        if length > len(data):
            self.ack_data(sid, length - len(data))
        if data:
            self._events.append((DATA_RECEIVED, sid, data))
        if flags & f.END_STREAM:
            stream.remote_closed = True
            self._events.append((STREAM_ENDED, sid))
            self._forget_if_done(sid, stream)

    def _headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0")
        pos, end = 0, len(payload)
        if flags & f.PADDED:
            if not end:
                raise H2ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "PADDED HEADERS without a byte")
            pos, end = 1, end - payload[0]
        bad = False
        if flags & f.PRIORITY_FLAG:
            if end - pos < 5:
                raise H2ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for PRIORITY")
            bad = f.u32(payload, pos) & f.MAX_WINDOW == sid  # a stream cannot depend on itself
            pos += 5
        if end < pos:
            raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR, "padding longer than the frame")
        fragment = payload[pos:end]
        if flags & f.END_HEADERS:
            self._head(sid, flags, fragment, bad)
            return
        self._block_sid, self._block_flags, self._block_bad = sid, flags, bad
        self._block = [fragment]
        self._block_size = len(fragment)

    def _continuation(self, flags: int, payload: bytes) -> None:
        self._block.append(payload)
        self._block_size += len(payload)
        if self._block_size > self.max_block or len(self._block) > 1024:
            raise H2ProtocolError(ErrorCode.ENHANCE_YOUR_CALM, "a header block too large")
        if flags & f.END_HEADERS:
            sid, self._block_sid = self._block_sid, 0
            block = b"".join(self._block)
            self._block = []
            self._head(sid, self._block_flags, block, self._block_bad)

    def _head(self, sid: int, flags: int, block: bytes, bad: bool) -> None:
        """A complete header block: decoded always (the HPACK context is the connection's)."""
        try:
            fields = self.decoder.decode(block)
        except OversizedError:
            fields = None
        ended = bool(flags & f.END_STREAM)
        stream = self.streams.get(sid)
        if (sid & 1) != 1 or (self.client and sid >= self.next_stream_id):
            raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR, f"HEADERS on stream {sid}")
        if fields is None:
            self._too_large(sid, stream, ended)
            return
        if stream is None:
            if self.client or sid <= self.last_peer_stream_id:
                return  # a stream that is over (we reset it): trailers or a late head
            self.last_peer_stream_id = sid
            if bad:
                self._stream_error(sid, ErrorCode.PROTOCOL_ERROR)
            elif len(self.streams) >= self._max_concurrent:
                self._stream_error(sid, ErrorCode.REFUSED_STREAM)
            elif not self.goaway_sent:
                stream = self.streams[sid] = _Stream(self.peer_initial_window,
                                                     self.local_initial_window)
                stream.head_seen = True
                stream.remote_closed = ended
                self._events.append((HEADERS_RECEIVED, sid, fields, ended))
            return
        if bad or stream.remote_closed:
            self._stream_error(sid, ErrorCode.PROTOCOL_ERROR if bad else ErrorCode.STREAM_CLOSED)
            return
        if not stream.head_seen:  # client role: the response
            status = fields[0][1] if fields and fields[0][0] == ":status" else ""
            if len(status) != 3 or not status.isdigit() or (status[0] == "1" and ended):
                self._stream_error(sid, ErrorCode.PROTOCOL_ERROR)
                return
            if status[0] == "1":
                return  # informational: the final response follows
            stream.head_seen = True
            stream.remote_closed = ended
            self._events.append((HEADERS_RECEIVED, sid, fields, ended))
        elif not ended:  # trailers must end the stream
            self._stream_error(sid, ErrorCode.PROTOCOL_ERROR)
            return
        else:
            stream.remote_closed = True
            self._events.append((STREAM_ENDED, sid))
        if ended:
            self._forget_if_done(sid, stream)

    def _too_large(self, sid: int, stream: _Stream | None, ended: bool) -> None:
        """A head over our header list bound refuses its stream, not the connection (RFC 9113
        §10.5.1; one visitor's or one origin's huge head must not end everyone's requests):
        a new request is answered 431 (what Go's server does), anything else is reset."""
        if stream is not None:
            self._stream_error(sid, ErrorCode.CANCEL)
        elif not self.client and sid > self.last_peer_stream_id:
            self.last_peer_stream_id = sid
            if not self.goaway_sent:
                self._out.append(f.frame(f.HEADERS, f.END_STREAM | f.END_HEADERS, sid,
                                         self.encoder.encode([(":status", "431")])))
                if not ended:  # RFC 9113 §8.1: stop sending the body, no error
                    self._out.append(f.rst_stream(sid, ErrorCode.NO_ERROR))

    def _window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE is not 4 bytes")
        inc = f.u32(payload) & f.MAX_WINDOW
        if sid == 0:
            if not inc:
                raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += inc
            if self.send_window > f.MAX_WINDOW:
                raise H2ProtocolError(ErrorCode.FLOW_CONTROL_ERROR, "connection window > 2^31-1")
        else:
            stream = self.streams.get(sid)
            if stream is None:
                if self._idle(sid):
                    raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR,
                                          f"WINDOW_UPDATE on idle stream {sid}")
                return
            if not inc or stream.send_window + inc > f.MAX_WINDOW:
                self._stream_error(sid, ErrorCode.PROTOCOL_ERROR if not inc
                                   else ErrorCode.FLOW_CONTROL_ERROR)
                return
            stream.send_window += inc
        self._events.append((WINDOW_OPENED,))

    def _rst_stream(self, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise H2ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM is not 4 bytes")
        if self._idle(sid):
            raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
        if self.streams.pop(sid, None) is not None:
            self._events.append((STREAM_RESET, sid, f.u32(payload)))

    def _settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid:
            raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & f.ACK:
            if payload:
                raise H2ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise H2ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6")
        for key, value in f.parse_settings(payload):
            if key == Setting.INITIAL_WINDOW_SIZE:
                if value > f.MAX_WINDOW:
                    raise H2ProtocolError(ErrorCode.FLOW_CONTROL_ERROR, "initial window > 2^31-1")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > f.MAX_WINDOW:
                        raise H2ProtocolError(ErrorCode.FLOW_CONTROL_ERROR,
                                              "a stream window > 2^31-1")
            elif key == Setting.MAX_FRAME_SIZE:
                if not f.MIN_FRAME_SIZE <= value <= f.MAX_FRAME_SIZE:
                    raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR, f"MAX_FRAME_SIZE {value}")
                self.max_outbound_frame_size = value
            elif key == Setting.HEADER_TABLE_SIZE:
                self.encoder.table_size_changed()
            elif key == Setting.ENABLE_PUSH:
                if value > 1 or (value and self.client):
                    raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR, f"ENABLE_PUSH {value}")
            elif key == Setting.MAX_CONCURRENT_STREAMS:
                self.peer_max_concurrent = value
            # MAX_HEADER_LIST_SIZE is advisory; unknown settings are ignored (RFC 9113 §6.5.2)
        self._out.append(f.frame(f.SETTINGS, f.ACK, 0))
        self.acks_queued += 1
        self._events.append((WINDOW_OPENED,))

    def _ping(self, flags: int, sid: int, payload: bytes) -> None:
        if sid:
            raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise H2ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "PING is not 8 bytes")
        if not flags & f.ACK:
            self._out.append(f.frame(f.PING, f.ACK, 0, payload))
            self.acks_queued += 1

    def _goaway(self, sid: int, payload: bytes) -> None:
        if sid:
            raise H2ProtocolError(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < 8:
            raise H2ProtocolError(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
        self.goaway_received = True
        self._events.append((GOAWAY_RECEIVED, f.u32(payload, 4), f.u32(payload) & f.MAX_WINDOW))
