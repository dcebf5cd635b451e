"""A small UDP endpoint that reads datagrams in batches and lets protocols flush once per batch.

asyncio's own datagram transport reads one datagram per event-loop iteration, and the QUIC
libraries' protocols process events and transmit (an ACK) after every datagram. Here one
readiness callback reads up to :data:`RECV_BATCH` datagrams; a protocol that wants to defer
its event processing and transmit calls :meth:`UdpEndpoint.defer` from ``datagram_received``
and its callback runs once, at the end of the same readiness callback (so no other loop
callback can run between receiving and flushing).

Syscalls are most of a bulk transfer's cost per packet, so on Linux the endpoint uses UDP
segmentation offload both ways: :meth:`UdpEndpoint.sendto_many` (which qh3's protocol calls
with every datagram of one transmit) sends runs of equal-sized datagrams to one peer with a
single ``sendmsg`` (``UDP_SEGMENT``), and ``UDP_GRO`` lets one ``recvmsg`` return several
datagrams of one sender (the kernel only coalesces datagrams of the same flow, so a server
socket serving many peers is safe). A protocol with ``datagrams_received(datagrams, addr)``
gets such a train in one call, others each segment on its own, with its sender's address.
Either falls back to one datagram per syscall where the kernel refuses.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

_P = TypeVar("_P", bound=asyncio.DatagramProtocol)

RECV_BATCH = 64
"""Datagrams read per readiness callback at most (bounds the latency other callbacks see)."""
RECV_SIZE = 65536
UDP_SEGMENT = 103
UDP_GRO = 104
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
"""Kernel limits for one ``UDP_SEGMENT`` send (segment count, payload bytes)."""
_SEGMENT_CMSG = struct.Struct("=H")
_GRO_CMSG = struct.Struct("=i")
_GRO_ANCILLARY = socket.CMSG_SPACE(_GRO_CMSG.size) if hasattr(socket, "CMSG_SPACE") else 0
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
        self._gso = sys.platform == "linux" and sock.type == socket.SOCK_DGRAM
        self._gro = self._gso and _enable_gro(sock)
        self._receive_many: Callable[[list[bytes], Any], None] | None = getattr(
            protocol, "datagrams_received", None)
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
        self._receive_many = getattr(protocol, "datagrams_received", None)

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

    def sendto_many(self, datagrams: list[bytes], addr: Any = None) -> None:
        """Send ``datagrams`` (one transmit's worth, all to ``addr``) in as few syscalls as
        the kernel allows: runs of one size (plus a shorter last one) go as one GSO send."""
        if not self._gso or len(datagrams) < 2 or self._send_buffer or self._closing:
            for data in datagrams:
                self.sendto(data, addr)
            return
        start, count = 0, len(datagrams)
        while start < count:
            size = len(datagrams[start])
            stop = start + 1
            limit = min(count, start + GSO_MAX_SEGMENTS, start + max(1, GSO_MAX_BYTES // size))
            while stop < limit and len(datagrams[stop]) == size:
                stop += 1
            if stop < limit and len(datagrams[stop]) < size:
                stop += 1  # a shorter datagram may end a run
            if stop - start == 1:
                self.sendto(datagrams[start], addr)
            elif not self._send_segments(datagrams[start:stop], size, addr):
                for data in datagrams[start:]:
                    self.sendto(data, addr)  # queued behind, or sent one by one
                return
            start = stop

    def _send_segments(self, run: list[bytes], size: int, addr: Any) -> bool:
        """One ``UDP_SEGMENT`` send; False when the caller must send ``run`` (and the rest)
        itself (the socket would block, or the kernel refuses GSO: then it is off for good)."""
        if self._send_buffer or self._closing:
            return False
        ancillary = [(socket.SOL_UDP, UDP_SEGMENT, _SEGMENT_CMSG.pack(size))]
        try:
            if addr is None:
                self._sock.sendmsg(run, ancillary)
            else:
                self._sock.sendmsg(run, ancillary, 0, addr)
            return True
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self._gso = False  # EIO/EINVAL/ENOPROTOOPT: no offload on this path
            return False

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
        buf = self._recv_buf
        view = memoryview(buf)
        protocol = self._protocol
        gro = self._gro
        recv_into = self._sock.recvfrom_into
        recvmsg_into = self._sock.recvmsg_into
        deferred: dict[Callable[[], None], None] = {}
        self._deferred = deferred
        delivered = 0
        try:
            while delivered < RECV_BATCH and not self._closing:
                segment = 0
                try:
                    if gro:
                        size, ancillary, _flags, addr = recvmsg_into((buf,), _GRO_ANCILLARY)
                        if ancillary:
                            segment = _gro_segment(ancillary)
                    else:
                        size, addr = recv_into(buf)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    protocol.error_received(exc)
                    break
                if segment <= 0 or segment >= size:
                    delivered += 1
                    self._deliver(protocol, bytes(view[:size]), addr)
                    continue
                many = self._receive_many
                if many is not None:
                    train = [bytes(view[offset:min(offset + segment, size)])
                             for offset in range(0, size, segment)]
                    delivered += len(train)
                    try:
                        many(train, addr)
                    except Exception as exc:
                        self._report("datagrams_received", exc)
                    continue
                for offset in range(0, size, segment):
                    delivered += 1
                    self._deliver(protocol, bytes(view[offset:min(offset + segment, size)]), addr)
        finally:
            view.release()
            self._deferred = None
            for callback in deferred:
                try:
                    callback()
                except Exception as exc:
                    self._report("deferred receive flush", exc)

    def _deliver(self, protocol: asyncio.DatagramProtocol, data: bytes, addr: Any) -> None:
        try:
            protocol.datagram_received(data, addr)
        except Exception as exc:  # one bad datagram must not stop the others
            self._report("datagram_received", exc)

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


def _enable_gro(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def _gro_segment(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The segment size of a coalesced receive (0: one datagram)."""
    for level, kind, data in ancillary:
        if level == socket.SOL_UDP and kind == UDP_GRO and len(data) >= _SEGMENT_CMSG.size:
            if len(data) >= _GRO_CMSG.size:
                return int(_GRO_CMSG.unpack_from(data)[0])
            return int(_SEGMENT_CMSG.unpack_from(data)[0])
    return 0


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
