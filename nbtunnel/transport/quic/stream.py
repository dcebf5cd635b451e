"""One QUIC bidirectional stream as an asyncio reader/writer with real back-pressure.

One rule for aborts: once a stream is reset (by us, or by the peer's STOP_SENDING) no byte is
ever handed to the library again; ``write()`` raises a typed error instead (see also the
backend's ``after_send_reset``, which keeps the library from sending what it had buffered).

Both directions are bounded: ``write()`` waits while the library holds more than the high-water
mark for this stream (neither library pushes back on its own), and received bytes only earn the
peer new credit (MAX_STREAM_DATA) once ``read()`` has handed them to the application.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING

from nbtunnel.transport.chunks import take
from nbtunnel.transport.errors import StreamAbortedError, StreamResetError, TransportError

if TYPE_CHECKING:
    from nbtunnel.transport.quic.connection import QuicTunnelConnection

WRITE_CHUNK = 64 << 10
"""write() hands data to the library in slices this big so the buffer overshoots by at most one."""


class QuicStream:
    """A bidi stream; create with ``open_stream()`` or get one from ``accept_stream()``."""

    def __init__(self, conn: QuicTunnelConnection, stream_id: int) -> None:
        self.stream_id = stream_id
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._consumed = 0
        self._credit = conn._settings.stream_receive_window
        self._eof = False
        self._reset_code: int | None = None
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self._write_error: TransportError | None = None
        self._fin_sent = False
        self._aborted = False  # reset() was called here
        self._recv_closed = False  # the peer's FIN or RESET_STREAM arrived
        self._stopped_waiter: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<QuicStream {self.stream_id} buffered={self._buffered} eof={self._eof}>"

    @property
    def at_eof(self) -> bool:
        """True once the peer's FIN was seen and every byte before it was read."""
        return self._eof and not self._chunks

    @property
    def readable(self) -> bool:
        return bool(self._chunks) or self._eof or self._reset_code is not None \
            or self._conn._error is not None

    async def read(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes; ``b""`` at FIN. Raises StreamResetError / TransportClosedError."""
        while not self._chunks:
            if self._reset_code is not None:
                raise StreamResetError(self._reset_code)
            if self._eof:
                return b""
            if self._conn._error is not None:
                raise self._conn._closed_exc()
            self._read_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None
        chunk = take(self._chunks, n)
        self._buffered -= len(chunk)
        self._consumed += len(chunk)
        self._maybe_grant_credit()
        return chunk

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; raises asyncio.IncompleteReadError on an early FIN."""
        parts: list[bytes] = []
        missing = n
        while missing:
            data = await self.read(missing)
            if not data:
                partial = b"".join(parts)
                raise asyncio.IncompleteReadError(partial, n)
            parts.append(data)
            missing -= len(data)
        return b"".join(parts)

    async def write(self, data: bytes) -> None:
        """Queue ``data``; waits while the library holds more than the high-water mark."""
        view = memoryview(data)
        settings = self._conn._settings
        for start in range(0, len(view), WRITE_CHUNK):
            self._check_writable()
            piece = data if len(data) <= WRITE_CHUNK else bytes(view[start : start + WRITE_CHUNK])
            self._hand_over(piece, False)
            while self._conn._send_buffer_size(self.stream_id) > settings.stream_high_water:
                self._write_waiter = asyncio.get_running_loop().create_future()
                self._conn._blocked_writers.add(self)
                try:
                    await self._write_waiter
                finally:
                    self._write_waiter = None
                    self._conn._blocked_writers.discard(self)
                self._check_writable()

    async def wait_peer_stopped(self) -> None:
        """Return once the peer no longer wants our data (STOP_SENDING) or the connection died.

        Lets a proxy notice an abandoned request while the origin is silent, instead of only
        at its next write.
        """
        await asyncio.shield(self.peer_stopped())

    def peer_stopped(self) -> asyncio.Future[None]:
        """Done on STOP_SENDING or when the connection died (see transport.base)."""
        waiter = self._stopped_waiter
        if waiter is None:
            waiter = self._stopped_waiter = asyncio.get_running_loop().create_future()
            if self._write_error is not None or self._conn._error is not None:
                waiter.set_result(None)
        return waiter

    def write_eof(self) -> None:
        """Send FIN (half-close); reading goes on."""
        if self._fin_sent or self._write_error is not None or self._conn._error is not None:
            return
        self._fin_sent = True
        with contextlib.suppress(StreamResetError):  # stopped: there is no FIN to send
            self._hand_over(b"", True)
        self._conn._maybe_forget(self)

    def reset(self, code: int = 0) -> None:
        """Abort both directions: RESET_STREAM for ours, STOP_SENDING for the peer's."""
        if not self._fin_sent and self._write_error is None:
            self._conn._reset(self.stream_id, code)
        self._fin_sent = True
        self._aborted = True
        self._wake_writer()  # a write blocked on back-pressure fails now, never sends again
        self.stop_reading(code)

    def stop_reading(self, code: int = 0) -> None:
        """Ask the peer to stop sending (STOP_SENDING); buffered data is dropped."""
        if not self._recv_closed:
            self._conn._stop(self.stream_id, code)
        self._chunks.clear()
        self._buffered = 0
        self._eof = True
        self._wake_reader()
        self._conn._maybe_forget(self)

    # called by the connection -----------------------------------------------------------

    def _send_last(self, data: bytes) -> None:
        """``data`` and FIN in one frame, one library call, no back-pressure wait: for a
        head (and body) that is all this stream will carry."""
        self._check_writable()
        self._fin_sent = True
        self._hand_over(data, True)
        self._conn._maybe_forget(self)

    def _hand_over(self, data: bytes, end_stream: bool) -> None:
        try:
            self._conn._send(self.stream_id, data, end_stream)
        except StreamResetError:
            self._on_stop_sending(0)  # the library knew of a STOP_SENDING we never saw
            raise

    def _check_writable(self) -> None:
        if self._write_error is not None:
            raise self._write_error
        if self._conn._error is not None:
            raise self._conn._closed_exc()
        if self._aborted:
            raise StreamAbortedError(f"stream {self.stream_id}: write after reset")
        if self._fin_sent:
            raise TransportError(f"stream {self.stream_id}: write after write_eof/reset")

    def _feed(self, data: bytes, end_stream: bool) -> None:
        if not self._eof and self._reset_code is None:  # else stop_reading(): unwanted bytes
            if data:
                self._chunks.append(data)
                self._buffered += len(data)
            self._eof = end_stream
            self._wake_reader()
        if end_stream:
            self._recv_closed = True
            self._conn._maybe_forget(self)

    def _feed_chunks(self, chunks: list[bytes], end_stream: bool) -> None:
        """``_feed`` for several chunks at once (one receive batch's packets)."""
        if not self._eof and self._reset_code is None:
            self._chunks.extend(chunks)
            self._buffered += sum(map(len, chunks))
            self._eof = end_stream
            self._wake_reader()
        if end_stream:
            self._recv_closed = True
            self._conn._maybe_forget(self)

    def _on_reset(self, code: int) -> None:
        self._recv_closed = True
        self._reset_code = code
        self._chunks.clear()
        self._buffered = 0
        self._wake_reader()
        self._conn._maybe_forget(self)

    def _on_stop_sending(self, code: int) -> None:
        self._write_error = StreamResetError(code, "peer sent STOP_SENDING")
        self._fin_sent = True
        self._wake_writer()
        if self._stopped_waiter is not None and not self._stopped_waiter.done():
            self._stopped_waiter.set_result(None)
        self._conn._maybe_forget(self)

    def _credit_target(self) -> int | None:
        """Receive limit to advertise, or None when the receive side is over."""
        if self._eof or self._reset_code is not None:
            return None
        return self._credit

    def _maybe_grant_credit(self) -> None:
        window = self._conn._settings.stream_receive_window
        target = self._consumed + window
        if target - self._credit >= window // 2:
            self._credit = target + (target & 1)  # even: see held_back_limit()
            self._conn._grant_credit(self.stream_id)

    def _wake_reader(self) -> None:
        if self._read_waiter is not None and not self._read_waiter.done():
            self._read_waiter.set_result(None)

    def _wake_writer(self) -> None:
        if self._write_waiter is not None and not self._write_waiter.done():
            self._write_waiter.set_result(None)

    @property
    def _done(self) -> bool:
        return self._recv_closed and self._fin_sent

