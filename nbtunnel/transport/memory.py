"""An in-memory ``TunnelConnection`` pair, for unit tests of the edge and the connector.

Like trio's ``memory_stream_pair``: ``memory_pair()`` returns the edge's and the connector's
ends of one connection. Heads travel as the ``ConnectRequest`` / ``ConnectResponse`` objects
themselves, bytes through bounded buffers (a writer waits while its peer holds more than
``HIGH_WATER`` unread bytes), and a configuration push calls the connector's handler directly.
It follows the QUIC roles: the connector opens the control stream, the edge every data stream.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque

from nbtunnel.core.streams import ConnectRequest, ConnectResponse
from nbtunnel.transport.base import ConfigHandler, DataStream, TunnelConnection
from nbtunnel.transport.errors import StreamResetError, TransportClosedError, TransportError

HIGH_WATER = 256 << 10
_ports = itertools.count(1)


class MemoryStream:
    """One end of an in-memory stream (a ``DataStream`` and a ``ControlStream``)."""

    def __init__(self, conn: MemoryConnection) -> None:
        self.conn = conn
        self.peer: MemoryStream = self
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False  # the peer ended its side
        self._reset: int | None = None  # the peer reset the stream
        self._sent_end = False
        self._stopped = False  # the peer no longer wants our data
        self._head: ConnectRequest | ConnectResponse | MemoryConfigurationPush | None = None
        self._changed = asyncio.Event()
        self._stopped_future: asyncio.Future[None] | None = None

    # -- heads ------------------------------------------------------------------------------
    async def send_request(self, request: ConnectRequest, *, end_stream: bool) -> None:
        self._send_head(request)
        if end_stream:
            self.write_eof()

    async def receive_response(self) -> ConnectResponse:
        head = await self._receive_head()
        if head is None:
            raise TransportError("the connector closed the stream before answering")
        assert isinstance(head, ConnectResponse)
        return head

    async def receive_request(self) -> ConnectRequest | MemoryConfigurationPush | None:
        head = await self._receive_head()
        assert not isinstance(head, ConnectResponse)
        return head

    async def send_response(self, response: ConnectResponse) -> None:
        self._send_head(response)
        if response.error:
            self.write_eof()

    # -- bytes ------------------------------------------------------------------------------
    @property
    def readable(self) -> bool:
        return bool(self._chunks) or self._eof or self._reset is not None or self.conn.closed

    async def read(self, n: int = 65536) -> bytes:
        while not self._chunks:
            if self._reset is not None:
                raise StreamResetError(self._reset)
            if self._eof:
                return b""
            self._check_connection()
            await self._wait()
        chunk = self._chunks.popleft()
        if len(chunk) > n:
            self._chunks.appendleft(chunk[n:])
            chunk = chunk[:n]
        self._buffered -= len(chunk)
        self.peer._wake()
        return chunk

    async def write(self, data: bytes) -> None:
        self._check_writable()
        peer = self.peer
        peer._chunks.append(bytes(data))
        peer._buffered += len(data)
        peer._wake()
        while peer._buffered > HIGH_WATER:
            await self._wait()
            self._check_writable()

    def write_eof(self) -> None:
        if self._sent_end or self.conn.closed or self._stopped:
            return
        self._sent_end = True
        self.peer._eof = True
        self.peer._wake()

    def reset(self, code: int = 0) -> None:
        """Abort both ways: the peer's reads raise StreamResetError, its writes fail."""
        if self.peer._reset is None and not self._sent_end:
            self.peer._reset = code
        self.peer._stopped = True
        self._sent_end = self._stopped = self._eof = True
        self._chunks.clear()
        self.peer._wake()
        self._wake()

    def finish(self) -> None:
        """The control plane is over: nothing to send (as QUIC)."""

    async def wait_peer_stopped(self) -> None:
        while not self._stopped and not self.conn.closed:
            await self._wait()

    def peer_stopped(self) -> asyncio.Future[None]:
        if self._stopped_future is None:
            self._stopped_future = asyncio.get_running_loop().create_future()
            self._wake()
        return self._stopped_future

    # -- internals ------------------------------------------------------------------------
    def _send_head(self, head: ConnectRequest | ConnectResponse | MemoryConfigurationPush
                   ) -> None:
        self._check_writable()
        self.peer._head = head
        self.peer._wake()

    async def _receive_head(
        self,
    ) -> ConnectRequest | ConnectResponse | MemoryConfigurationPush | None:
        while self._head is None:
            if self._reset is not None:
                raise StreamResetError(self._reset)
            if self._eof:
                return None
            self._check_connection()
            await self._wait()
        return self._head

    def _check_connection(self) -> None:
        if self.conn.closed:
            raise self.conn.closed_error()

    def _check_writable(self) -> None:
        self._check_connection()
        if self._stopped:
            raise StreamResetError(self.peer._reset or 0, "the peer stopped the stream")
        if self._sent_end:
            raise TransportError("the stream's write side is already closed")

    async def _wait(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    def _wake(self) -> None:
        self._changed.set()
        future = self._stopped_future
        if future is not None and not future.done() and (self._stopped or self.conn.closed):
            future.set_result(None)


class MemoryConfigurationPush:
    """A configuration the edge pushed; ``serve`` answers it with the connector's handler."""

    def __init__(self, version: int, config: bytes) -> None:
        self.version = version
        self.config = config
        self.answer: asyncio.Future[tuple[int, str]] = (
            asyncio.get_running_loop().create_future())

    async def serve(self, apply: ConfigHandler) -> None:
        if not self.answer.done():
            self.answer.set_result(apply(self.version, self.config))


class MemoryConnection:
    """One end of an in-memory tunnel connection; make both with :func:`memory_pair`."""

    def __init__(self, *, is_edge: bool, protocol: str = "quic") -> None:
        self.is_edge = is_edge
        self.protocol = protocol
        self.remote_address: tuple[str, int] = ("memory", next(_ports))
        self.close_reason = ""
        self.silent_for = 0.0  # tests set it to play a silent (SIGKILLed) connector
        self.peer: MemoryConnection = self
        self._accepted: deque[MemoryStream] = deque()
        self._changed = asyncio.Event()
        self._closed = asyncio.Event()
        self.opened: list[MemoryStream] = []
        """Every stream this end opened (tests inspect them)."""
        self._pushes: list[MemoryConfigurationPush] = []

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def terminated(self) -> bool:
        return self._closed.is_set()

    def closed_error(self) -> TransportClosedError:
        return TransportClosedError(f"the memory connection is closed: {self.close_reason}")

    async def control_stream(self) -> MemoryStream:
        return await self.accept_stream() if self.is_edge else self._open()

    def open_stream(self) -> MemoryStream:
        return self._open()

    async def accept_stream(self) -> MemoryStream:
        while not self._accepted:
            if self.closed:
                raise self.closed_error()
            self._changed.clear()
            await self._changed.wait()
        return self._accepted.popleft()

    async def update_configuration(self, version: int, config: bytes) -> tuple[int, str]:
        stream = self._open()
        push = MemoryConfigurationPush(version, config)
        self._pushes.append(push)
        stream._send_head(push)
        try:
            return await push.answer
        finally:
            self._pushes.remove(push)

    def close(self, error_code: int = 0, reason: str = "") -> None:
        if self.closed:
            return
        text = f"closed locally: error 0x{error_code:x}, reason {reason!r}"
        self._terminate(text)
        self.peer._terminate(f"closed by the peer: error 0x{error_code:x}, reason {reason!r}")

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def _open(self) -> MemoryStream:
        if self.closed:
            raise self.closed_error()
        ours, theirs = MemoryStream(self), MemoryStream(self.peer)
        ours.peer, theirs.peer = theirs, ours
        self.opened.append(ours)
        self.peer._accepted.append(theirs)
        self.peer._changed.set()
        return ours

    def _terminate(self, reason: str) -> None:
        if self.closed:
            return
        self.close_reason = reason
        self._closed.set()
        self._changed.set()
        for stream in self.opened:
            stream._wake()
            stream.peer._wake()
        for push in self._pushes:
            if not push.answer.done():
                push.answer.set_exception(self.closed_error())


def memory_pair(protocol: str = "quic") -> tuple[MemoryConnection, MemoryConnection]:
    """``(edge end, connector end)`` of one in-memory tunnel connection."""
    edge, connector = MemoryConnection(is_edge=True, protocol=protocol), MemoryConnection(
        is_edge=False, protocol=protocol)
    edge.peer, connector.peer = connector, edge
    return edge, connector


def _conforms(conn: MemoryConnection, stream: MemoryStream) -> tuple[TunnelConnection, DataStream]:
    """Static check only (mypy): the pair implements the seam."""
    return conn, stream
