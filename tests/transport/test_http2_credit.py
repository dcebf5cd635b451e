"""Connection-level flow control of the HTTP/2 transport over many streams: bytes a stream
buffered but nobody will read (the stream was reset, by either side) go back to the shared
connection window, so the peer never stalls on other streams. h2 is the peer, plain TCP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import pytest

from nbtunnel.transport.errors import StreamResetError
from nbtunnel.transport.http2 import WINDOW, ConnectorH2Connection, EdgeH2Connection, H2Stream
from nbtunnel.transport.http2.connection import CONN_WINDOW, H2Connection

GET = [(":method", "GET"), (":scheme", "http"), (":authority", "a.example"), (":path", "/")]
ROUNDS = CONN_WINDOW // WINDOW + 4
"""More abandoned full windows than the connection window holds."""


@dataclass
class Peer:
    """The h2 side: sends what the test asks as its windows allow."""

    h2: h2.connection.H2Connection
    writer: asyncio.StreamWriter
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    heads: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    received: int = 0
    ack: bool = True
    """Whether DATA received is credited back at once."""

    def flush(self) -> None:
        self.writer.write(self.h2.data_to_send())

    async def send_body(self, sid: int, size: int, *, end: bool = False) -> None:
        """``size`` bytes of DATA on ``sid``, waiting for credit (a deadline, not forever)."""
        async with asyncio.timeout(10):
            while size:
                room = min(self.h2.local_flow_control_window(sid), size,
                           self.h2.max_outbound_frame_size)
                if room <= 0:
                    self.changed.clear()
                    await self.changed.wait()
                    continue
                size -= room
                self.h2.send_data(sid, b"x" * room, end_stream=end and not size)
                self.flush()


async def _serve(peer_side_client: bool, ready: asyncio.Queue[Peer],
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=peer_side_client, header_encoding="utf-8"))
    conn.initiate_connection()
    peer = Peer(conn, writer)
    peer.flush()
    ready.put_nowait(peer)
    while data := await reader.read(65536):
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived | h2.events.ResponseReceived):
                peer.heads[event.stream_id] = [(str(n), str(v)) for n, v in event.headers]
            elif isinstance(event, h2.events.DataReceived):
                peer.received += len(event.data)
                if peer.ack:
                    conn.acknowledge_received_data(event.flow_controlled_length,
                                                   event.stream_id)
        peer.flush()
        peer.changed.set()


async def _pair(ours: type[H2Connection], peer_side_client: bool,
                ) -> AsyncIterator[tuple[H2Connection, Peer]]:
    ready: asyncio.Queue[Peer] = asyncio.Queue()
    server = await asyncio.start_server(
        lambda r, w: _serve(peer_side_client, ready, r, w), "127.0.0.1", 0)
    _, conn = await asyncio.get_running_loop().create_connection(
        ours, *server.sockets[0].getsockname()[:2])
    peer = await asyncio.wait_for(ready.get(), 5)
    try:
        yield conn, peer
    finally:
        conn.close()
        server.close()


@pytest.fixture
async def edge_pair() -> AsyncIterator[tuple[H2Connection, Peer]]:
    async for pair in _pair(EdgeH2Connection, False):
        yield pair


@pytest.fixture
async def connector_pair() -> AsyncIterator[tuple[H2Connection, Peer]]:
    async for pair in _pair(ConnectorH2Connection, True):
        yield pair


async def _buffered(stream: H2Stream, size: int) -> None:
    async with asyncio.timeout(5):
        while sum(map(len, stream._chunks)) < size:  # noqa: ASYNC110 - a plain predicate
            await asyncio.sleep(0.005)


async def _read_all(stream: H2Stream) -> int:
    got = 0
    async with asyncio.timeout(10):
        while chunk := await stream.read():
            got += len(chunk)
    return got


async def _upload_still_flows(connector: ConnectorH2Connection, peer: Peer) -> None:
    """Two windows' worth of upload on a new stream: it moves only if the rounds before gave
    the connection window back."""
    sid = peer.h2.get_next_available_stream_id()
    peer.h2.send_headers(sid, [(":method", "POST"), *GET[1:]])
    sending = asyncio.create_task(peer.send_body(sid, 2 * WINDOW, end=True))
    stream = await asyncio.wait_for(connector.accept_stream(), 5)
    assert await _read_all(stream) == 2 * WINDOW
    await sending


async def _response_stream(edge: EdgeH2Connection, peer: Peer) -> H2Stream:
    stream = H2Stream(edge)
    stream.send_headers(GET, end_stream=True)
    assert stream.stream_id is not None
    peer.flush()
    async with asyncio.timeout(5):
        while stream.stream_id not in peer.heads:
            peer.changed.clear()
            await peer.changed.wait()
    peer.h2.send_headers(stream.stream_id, [(":status", "200")])
    return stream


async def test_edge_resetting_unread_responses_keeps_the_connection_window(
    edge_pair: tuple[EdgeH2Connection, Peer],
) -> None:
    """A visitor that leaves mid-download: the edge resets the stream with a full window
    buffered. Those bytes are credited back; else after ~16 such visitors the connector
    could send no response body on this connection at all."""
    edge, peer = edge_pair
    for _ in range(ROUNDS):
        stream = await _response_stream(edge, peer)
        assert stream.stream_id is not None
        await peer.send_body(stream.stream_id, WINDOW)
        await _buffered(stream, WINDOW)
        stream.reset(0)
    last = await _response_stream(edge, peer)
    assert last.stream_id is not None
    sending = asyncio.create_task(peer.send_body(last.stream_id, 2 * WINDOW, end=True))
    assert await _read_all(last) == 2 * WINDOW
    await sending


async def test_connector_reset_by_the_edge_keeps_the_connection_window(
    connector_pair: tuple[ConnectorH2Connection, Peer],
) -> None:
    """The edge cancels uploads the origin has not read yet (its visitor left): the bytes the
    connector buffered go back to the connection window."""
    connector, peer = connector_pair
    for _ in range(ROUNDS):
        sid = peer.h2.get_next_available_stream_id()
        peer.h2.send_headers(sid, [(":method", "POST"), *GET[1:]])
        await peer.send_body(sid, WINDOW)
        stream = await asyncio.wait_for(connector.accept_stream(), 5)
        await _buffered(stream, WINDOW)
        peer.h2.reset_stream(sid, 8)
        peer.flush()
        async with asyncio.timeout(5):
            await stream.wait_peer_stopped()
    await _upload_still_flows(connector, peer)


async def test_connector_answering_without_reading_the_body_keeps_the_connection_window(
    connector_pair: tuple[ConnectorH2Connection, Peer],
) -> None:
    """An origin that answers (401, 413) without reading the upload: once the stream is over
    both ways its unread body no longer holds the connection window."""
    connector, peer = connector_pair
    for _ in range(ROUNDS):
        sid = peer.h2.get_next_available_stream_id()
        peer.h2.send_headers(sid, [(":method", "POST"), *GET[1:]])
        await peer.send_body(sid, WINDOW, end=True)
        stream = await asyncio.wait_for(connector.accept_stream(), 5)
        await _buffered(stream, WINDOW)
        stream.respond([(":status", "413")], end_stream=True)
    await _upload_still_flows(connector, peer)


async def test_a_late_reader_gets_the_bytes_once_credited(
    connector_pair: tuple[ConnectorH2Connection, Peer],
) -> None:
    """Bytes credited when the stream ended both ways are still read (a half-closed TCP
    flow), and reading them credits nothing twice: the peer's view of the connection
    window never exceeds what we granted."""
    connector, peer = connector_pair
    sid = peer.h2.get_next_available_stream_id()
    peer.h2.send_headers(sid, [(":method", "POST"), *GET[1:]])
    await peer.send_body(sid, WINDOW, end=True)
    stream = await asyncio.wait_for(connector.accept_stream(), 5)
    await _buffered(stream, WINDOW)
    stream.respond([(":status", "200")], end_stream=True)
    assert connector.h2._conn_unacked == WINDOW
    assert await _read_all(stream) == WINDOW
    assert connector.h2._conn_unacked == WINDOW


async def test_a_writer_waiting_for_credit_fails_at_once_when_the_peer_resets(
    connector_pair: tuple[ConnectorH2Connection, Peer],
) -> None:
    """The peer reads nothing, then resets the stream (its visitor left): the write waiting
    for window fails now, not when some other stream's credit happens to arrive."""
    connector, peer = connector_pair
    peer.ack = False
    sid = peer.h2.get_next_available_stream_id()
    peer.h2.send_headers(sid, GET, end_stream=True)
    peer.flush()
    stream = await asyncio.wait_for(connector.accept_stream(), 5)
    stream.respond([(":status", "200")])
    writing = asyncio.create_task(stream.write(b"x" * 200_000))
    async with asyncio.timeout(5):
        while peer.received < 65535:  # the peer's default stream window, all sent
            peer.changed.clear()
            await peer.changed.wait()
    assert not writing.done()
    peer.h2.reset_stream(sid, 8)
    peer.flush()
    with pytest.raises(StreamResetError):
        await asyncio.wait_for(writing, 5)
