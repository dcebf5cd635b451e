"""One QUIC connection (client or server side), library-neutral.

The backend's protocol forwards every library event here *synchronously* (as typed
``_on_*`` calls), so bytes that arrive in the same receive batch as HandshakeCompleted land in a
stream buffer before any application code runs. Nothing here starts a task: transmits,
keepalives and the handshake deadline are loop callbacks that are cancelled when the
connection ends. It is a ``transport.base.TunnelConnection``: the control stream is the first
client-initiated stream, and a configuration push is an RPC stream (configuration.py).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

from nbtunnel.transport.errors import (
    ConnectTimeoutError,
    HandshakeError,
    StreamResetError,
    TransportClosedError,
)
from nbtunnel.transport.quic.backend import Backend, ProtocolOwner, QuicSettings, TunnelProtocol
from nbtunnel.transport.quic.configuration import push_configuration
from nbtunnel.transport.quic.data_stream import QuicDataStream
from nbtunnel.transport.quic.stream import QuicStream

MAX_QUEUED_DATAGRAMS = 1024
_ping_ids = itertools.count(1)


def _describe_close(error_code: int, reason: str) -> str:
    if reason == "Idle timeout":
        return "idle timeout"
    if 0x100 <= error_code <= 0x1FF:
        return f"TLS alert {error_code - 0x100} (CRYPTO_ERROR 0x{error_code:x}): {reason!r}"
    return f"connection closed: error 0x{error_code:x}, reason {reason!r}"


class QuicTunnelConnection(ProtocolOwner):
    """A QUIC connection carrying the tunnel: bidi streams plus RFC 9221 datagrams."""

    protocol = "quic"

    def __init__(
        self,
        backend: Backend,
        quic: Any,
        protocol: TunnelProtocol,
        settings: QuicSettings,
        *,
        on_handshake: Callable[[QuicTunnelConnection], None] | None = None,
        on_terminated: Callable[[QuicTunnelConnection], None] | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._backend = backend
        self._quic = quic
        self._protocol = protocol
        self._settings = settings
        self._is_client: bool = quic.configuration.is_client
        self._on_handshake = on_handshake
        self._on_terminated = on_terminated
        self.backend = backend.name
        self.alpn: str | None = None
        self.remote_address: tuple[str, int] = ("", 0)
        self.local_address: tuple[str, int] = ("", 0)
        self.close_reason = ""
        self._last_received = self._loop.time()
        self._last_addr: Any = None
        self._streams: dict[int, QuicDataStream] = {}
        self._accept_queue: deque[QuicDataStream] = deque()
        self._accept_waiter: asyncio.Future[None] | None = None
        self._datagrams: deque[bytes] = deque()
        self._datagram_waiter: asyncio.Future[None] | None = None
        self._blocked_writers: set[QuicStream] = set()
        self._error: TransportClosedError | None = None
        self._handshake: asyncio.Future[None] = self._loop.create_future()
        self._terminated = asyncio.Event()
        self._transport: asyncio.DatagramTransport | None = None
        self._transmit_handle: asyncio.Handle | None = None
        self._data_queued = False  # stream data went to the library since the last transmit
        self._keepalive_handle: asyncio.TimerHandle | None = None
        self._handshake_timer: asyncio.TimerHandle | None = self._loop.call_later(
            settings.handshake_timeout, self._on_handshake_timeout
        )
        backend.prepare_connection(quic, settings, self._credit_for)

    def __repr__(self) -> str:
        return f"<QuicTunnelConnection {self.backend} {self.remote_address} {self.close_reason}>"

    # public API -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._error is not None

    @property
    def terminated(self) -> bool:
        """Same as ``closed``: QUIC has no graceful "no new streams" state here."""
        return self._error is not None

    @property
    def cipher(self) -> str | None:
        return self._backend.cipher(self._quic)

    @property
    def tls_group(self) -> str | None:
        return self._backend.tls_group(self._quic)

    def open_stream(self) -> QuicDataStream:
        """A new locally initiated bidi stream (nothing is sent until the first write)."""
        if self._error is not None:
            raise self._closed_exc()
        stream_id = self._quic.get_next_available_stream_id()
        self._quic.send_stream_data(stream_id, b"")  # registers it so the next id differs
        stream = self._streams[stream_id] = QuicDataStream(self, stream_id)
        return stream

    async def control_stream(self) -> QuicDataStream:
        """The registration stream: the connector (client) opens the first bidi stream."""
        return self.open_stream() if self._is_client else await self.accept_stream()

    async def update_configuration(self, version: int, config: bytes) -> tuple[int, str]:
        """Edge role: ``updateConfiguration`` over a fresh RPC stream."""
        return await push_configuration(self.open_stream(), version, config)

    async def accept_stream(self) -> QuicDataStream:
        """The next peer-initiated bidi stream; TransportClosedError once the connection ends."""
        while not self._accept_queue:
            if self._error is not None:
                raise self._closed_exc()
            self._accept_waiter = self._loop.create_future()
            try:
                await self._accept_waiter
            finally:
                self._accept_waiter = None
        return self._accept_queue.popleft()

    def send_datagram(self, data: bytes) -> None:
        if self._error is not None:
            raise self._closed_exc()
        self._quic.send_datagram_frame(data)
        self._schedule_transmit()

    async def receive_datagram(self) -> bytes:
        while not self._datagrams:
            if self._error is not None:
                raise self._closed_exc()
            self._datagram_waiter = self._loop.create_future()
            try:
                await self._datagram_waiter
            finally:
                self._datagram_waiter = None
        return self._datagrams.popleft()

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Send CONNECTION_CLOSE; local operations fail at once, wait_closed() ends later."""
        if self._error is not None:
            return
        self.close_reason = f"closed locally: error 0x{error_code:x}, reason {reason!r}"
        self._fail(TransportClosedError(self.close_reason))
        self._quic.close(error_code=error_code, reason_phrase=reason)
        self._protocol.transmit()

    async def wait_closed(self) -> None:
        await self._terminated.wait()

    # glue used by QuicStream ------------------------------------------------------------

    def _closed_exc(self) -> TransportClosedError:
        err = self._error
        assert err is not None
        return TransportClosedError(str(err), err.cause)

    def _send(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        try:
            self._quic.send_stream_data(stream_id, data, end_stream)
        except (AssertionError, RuntimeError, ValueError) as exc:
            # The library already reset this send side: the peer's STOP_SENDING arrived
            # before the stream's first bytes did, so the stream never heard of it; or it
            # reset it and, the peer's side being over too, forgot the stream (ValueError:
            # "unknown peer-initiated stream").
            raise StreamResetError(0, exc) from exc
        self._data_queued = True
        self._schedule_transmit()

    def _send_buffer_size(self, stream_id: int) -> int:
        return self._backend.send_buffer_size(self._quic, stream_id)

    def _reset(self, stream_id: int, code: int) -> None:
        if self._error is None:
            try:
                self._quic.reset_stream(stream_id, code)
            except (ValueError, AssertionError, KeyError):
                return  # already reset or finished: nothing to abort
            self._backend.after_send_reset(self._quic, stream_id)
            self._schedule_transmit()

    def _stop(self, stream_id: int, code: int) -> None:
        if self._error is None:
            try:
                self._quic.stop_stream(stream_id, code)
            except (ValueError, AssertionError, KeyError):
                return
            self._schedule_transmit()

    def _grant_credit(self, stream_id: int) -> None:
        if self._error is None:
            self._backend.grant_credit(self._quic, stream_id)
            self._schedule_transmit()

    def _credit_for(self, stream_id: int) -> int | None:
        stream = self._streams.get(stream_id)
        return None if stream is None else stream._credit_target()

    def _maybe_forget(self, stream: QuicStream) -> None:
        if stream._done:
            self._streams.pop(stream.stream_id, None)
            self._blocked_writers.discard(stream)

    def held_streams(self) -> tuple[int, int]:
        """(streams in our table, streams the QUIC library keeps): both fall back once every
        stream has ended on both sides, so a count that only grows is a leak (tests, soaks)."""
        return len(self._streams), self._backend.library_streams(self._quic)

    @property
    def silent_for(self) -> float:
        """Seconds since the last packet from the peer (a live peer pings every second)."""
        return self._loop.time() - self._last_received

    # called by the backend protocol -----------------------------------------------------

    def _on_datagram(self, addr: Any, now: float) -> None:
        self._last_received = now
        if self._last_addr is None and not self._is_client:
            self._backend.peer_address(self._quic, self._settings, addr)
        self._last_addr = addr

    def _on_stream_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._new_peer_stream(stream_id)
            if stream is None:
                return
        stream._feed(data, end_stream)

    def _on_stream_chunks(self, stream_id: int, chunks: list[bytes], end_stream: bool) -> None:
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._new_peer_stream(stream_id)
            if stream is None:
                return
        stream._feed_chunks(chunks, end_stream)

    def _on_stream_reset(self, stream_id: int, error_code: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream._on_reset(error_code)

    def _on_stop_sending(self, stream_id: int, error_code: int) -> None:
        # the library reset our send side: even for a stream we forgot, no byte may follow
        self._backend.after_send_reset(self._quic, stream_id)
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream._on_stop_sending(error_code)

    def _on_datagram_frame(self, data: bytes) -> None:
        if len(self._datagrams) >= MAX_QUEUED_DATAGRAMS:
            self._datagrams.popleft()  # unreliable by design: drop the oldest
        self._datagrams.append(data)
        _wake(self._datagram_waiter)

    def _on_connection_terminated(self, error_code: int, reason: str) -> None:
        self._terminate(_describe_close(error_code, reason))

    def _before_transmit(self) -> None:
        self._backend.before_transmit(self._quic, self._credit_for)
        if self._data_queued:  # a pending ACK rides along (backend.ack_with_data)
            self._data_queued = False
            self._backend.ack_with_data(self._quic, self._loop.time())

    def _after_transmit(self) -> None:
        self._backend.after_transmit(self._quic)
        if self._blocked_writers:
            low = self._settings.stream_low_water
            for stream in list(self._blocked_writers):
                if self._send_buffer_size(stream.stream_id) < low:
                    stream._wake_writer()

    # internals --------------------------------------------------------------------------

    def _new_peer_stream(self, stream_id: int) -> QuicDataStream | None:
        peer_initiated = bool(stream_id & 1) == self._is_client
        if not peer_initiated or stream_id & 2 or self._error is not None:
            return None  # a stream we already forgot, or unidirectional: not used by tunnels
        stream = self._streams[stream_id] = QuicDataStream(self, stream_id)
        self._accept_queue.append(stream)
        _wake(self._accept_waiter)
        return stream

    def _on_handshake_completed(self, alpn: str | None) -> None:
        self.alpn = alpn
        self._backend.after_handshake(self._quic)
        if self._last_addr is not None:  # the datagram that completed the handshake
            self.remote_address = (str(self._last_addr[0]), int(self._last_addr[1]))
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        if not self._handshake.done():
            self._handshake.set_result(None)
        if self._is_client and self._settings.keepalive:
            self._keepalive_handle = self._loop.call_later(
                self._settings.keepalive, self._send_keepalive
            )
        if self._on_handshake is not None:
            self._on_handshake(self)

    def _on_handshake_timeout(self) -> None:
        self._handshake_timer = None
        if not self._handshake.done():
            self._handshake.set_exception(
                ConnectTimeoutError(f"no QUIC handshake within {self._settings.handshake_timeout}s")
            )
            self._handshake.exception()
            self._abort("handshake timeout")

    def _send_keepalive(self) -> None:
        self._keepalive_handle = None
        if self._error is None and self._settings.keepalive:
            self._quic.send_ping(next(_ping_ids))
            self._protocol.transmit()
            self._keepalive_handle = self._loop.call_later(
                self._settings.keepalive, self._send_keepalive
            )

    def _schedule_transmit(self) -> None:
        if self._transmit_handle is None:
            self._transmit_handle = self._loop.call_soon(self._transmit_now)

    def _transmit_now(self) -> None:
        self._transmit_handle = None
        if not self._terminated.is_set():
            self._protocol.transmit()

    def _fail(self, error: TransportClosedError) -> None:
        """Make every pending and future operation raise ``error``."""
        if self._error is None:
            self._error = error
        for stream in list(self._streams.values()):
            stream._wake_reader()
            stream._wake_writer()
            waiter = stream._stopped_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        _wake(self._accept_waiter)
        _wake(self._datagram_waiter)
        if not self._handshake.done():
            self._handshake.set_exception(HandshakeError(error.args[0], error.cause))
            self._handshake.exception()  # servers never await it: do not log "never retrieved"

    def _abort(self, reason: str) -> None:
        """Close without waiting for the draining period (handshake failure, server stop)."""
        if not self._terminated.is_set():
            if self._error is None:
                self.close(0, reason)
            self._terminate(reason)

    def _terminate(self, reason: str) -> None:
        if self._terminated.is_set():
            return
        if not self.close_reason:
            self.close_reason = reason
        self._fail(TransportClosedError(self.close_reason))
        for handle in (self._transmit_handle, self._keepalive_handle, self._handshake_timer):
            if handle is not None:
                handle.cancel()
        self._transmit_handle = self._keepalive_handle = self._handshake_timer = None
        self._protocol.shutdown()
        if self._transport is not None:
            self._transport.close()
        self._terminated.set()
        if self._on_terminated is not None:
            self._on_terminated(self)

    def _attach_transport(self, transport: asyncio.DatagramTransport) -> None:
        self._transport = transport
        self._set_local(transport.get_extra_info("socket"))

    def _set_local(self, sock: socket.socket | None) -> None:
        if sock is not None:
            self.local_address = tuple(sock.getsockname()[:2])

    async def _wait_handshake(self) -> None:
        await asyncio.shield(self._handshake)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
