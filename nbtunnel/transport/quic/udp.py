"""A small UDP endpoint that reads datagrams in batches and lets protocols flush once per batch.

asyncio's own datagram transport reads one datagram per event-loop iteration, and the QUIC
libraries' protocols process events and transmit (an ACK) after every datagram. Here one
readiness callback reads up to :data:`RECV_BATCH` datagrams; a protocol that wants to defer
its event processing and transmit calls :meth:`UdpEndpoint.defer` from ``datagram_received``
and its callback runs once, at the end of the same readiness callback (so no other loop
callback can run between receiving and flushing).

Deliberately plain ``recvfrom``: no GRO and no batched receive that could merge datagrams from
different senders (a server socket serves many peers).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

_P = TypeVar("_P", bound=asyncio.DatagramProtocol)

RECV_BATCH = 64
"""Datagrams read per readiness callback at most (bounds the latency other callbacks see)."""
RECV_SIZE = 65536
MAX_SEND_BUFFER = 512 << 10
"""Bytes queued while the socket would block; beyond it datagrams are dropped (QUIC resends)."""


class UdpEndpoint(asyncio.DatagramTransport):
    """Non-blocking UDP socket driven by ``loop.add_reader``; see the module docstring."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.DatagramProtocol,
    ) -> None:
        sockname = sock.getsockname()
        try:
            peername = sock.getpeername()
        except OSError:
            peername = None
        super().__init__({"socket": sock, "sockname": sockname, "peername": peername})
        sock.setblocking(False)
        self._loop = loop
        self._sock = sock
        self._protocol = protocol
        self._closing = False
        self._lost = False
        self._reading = False
        self._writing = False
        self._send_buffer: deque[tuple[bytes, Any]] = deque()
        self._send_buffer_size = 0
        self._recv_buf = bytearray(RECV_SIZE)
        self._deferred: dict[Callable[[], None], None] | None = None
        protocol.connection_made(self)
        if not self._closing:
            loop.add_reader(sock.fileno(), self._read_ready)
            self._reading = True

    # asyncio.DatagramTransport ----------------------------------------------------------

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.DatagramProtocol)
        self._protocol = protocol

    def is_closing(self) -> bool:
        return self._closing

    def get_write_buffer_size(self) -> int:
        return self._send_buffer_size

    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._closing or not data:
            return
        if not self._send_buffer:
            try:
                if addr is None:
                    self._sock.send(data)
                else:
                    self._sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                self._protocol.error_received(exc)
                return
        if self._send_buffer_size + len(data) > MAX_SEND_BUFFER:
            return  # dropped: QUIC detects the loss and retransmits
        self._send_buffer.append((bytes(data), addr))
        self._send_buffer_size += len(data)
        if not self._writing:
            self._loop.add_writer(self._sock.fileno(), self._write_ready)
            self._writing = True

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._stop_reading()
        if not self._send_buffer:
            self._loop.call_soon(self._connection_lost, None)
        # else _write_ready drains the buffer first, then calls _connection_lost

    def abort(self) -> None:
        self._closing = True
        self._stop_reading()
        self._stop_writing()
        self._send_buffer.clear()
        self._send_buffer_size = 0
        self._loop.call_soon(self._connection_lost, None)

    # batching ---------------------------------------------------------------------------

    def defer(self, callback: Callable[[], None]) -> bool:
        """Run ``callback`` (once, however often deferred) at the end of the current receive
        batch, in first-deferred order; False when no batch is being delivered."""
        deferred = self._deferred
        if deferred is None:
            return False
        deferred[callback] = None
        return True

    # internals --------------------------------------------------------------------------

    def _read_ready(self) -> None:
        recv_into = self._sock.recvfrom_into
        buf = self._recv_buf
        view = memoryview(buf)
        protocol = self._protocol
        deferred: dict[Callable[[], None], None] = {}
        self._deferred = deferred
        try:
            for _ in range(RECV_BATCH):
                if self._closing:
                    break
                try:
                    size, addr = recv_into(buf)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    protocol.error_received(exc)
                    break
                try:
                    protocol.datagram_received(bytes(view[:size]), addr)
                except Exception as exc:  # one bad datagram must not stop the others
                    self._report("datagram_received", exc)
        finally:
            view.release()
            self._deferred = None
            for callback in deferred:
                try:
                    callback()
                except Exception as exc:
                    self._report("deferred receive flush", exc)

    def _write_ready(self) -> None:
        buffer = self._send_buffer
        while buffer:
            data, addr = buffer[0]
            try:
                if addr is None:
                    self._sock.send(data)
                else:
                    self._sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._protocol.error_received(exc)
            buffer.popleft()
            self._send_buffer_size -= len(data)
        self._stop_writing()
        if self._closing:
            self._connection_lost(None)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._sock.fileno())

    def _stop_writing(self) -> None:
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._sock.fileno())

    def _connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()

    def _report(self, what: str, exc: Exception) -> None:
        self._loop.call_exception_handler(
            {
                "message": f"UDP endpoint: {what} failed",
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
            }
        )


async def open_endpoint(
    protocol_factory: Callable[[], _P],
    *,
    sock: socket.socket | None = None,
    local_addr: tuple[str, int] | None = None,
    reuse_port: bool = False,
) -> tuple[UdpEndpoint, _P]:
    """Like ``loop.create_datagram_endpoint`` with ``sock=`` or ``local_addr=``, but batched."""
    loop = asyncio.get_running_loop()
    if sock is None:
        assert local_addr is not None
        sock = await _bind(loop, *local_addr, reuse_port=reuse_port)
    protocol = protocol_factory()
    try:
        transport = UdpEndpoint(loop, sock, protocol)
    except BaseException:
        sock.close()
        raise
    return transport, protocol


async def _bind(loop: asyncio.AbstractEventLoop, host: str, port: int, *,
                reuse_port: bool = False) -> socket.socket:
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, proto=socket.IPPROTO_UDP)
    if not infos:
        raise OSError(f"getaddrinfo({host!r}) returned an empty list")
    error: OSError | None = None
    for family, type_, proto, _, addr in infos:
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            if reuse_port:  # several processes on one port: the kernel hashes peers to one
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    assert error is not None
    raise error
