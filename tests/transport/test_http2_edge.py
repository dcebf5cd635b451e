"""The edge's role over HTTP/2 against a scripted fake connector (h2 server side, plain TCP)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from nbtunnel.core.errors import DecodeError
from nbtunnel.core.h2headers import encode_serialized_headers
from nbtunnel.core.httpmeta import build_connect_request, parse_http_response
from nbtunnel.transport.errors import TransportClosedError
from nbtunnel.transport.http2 import WINDOW, EdgeH2Connection, H2Stream
from nbtunnel.transport.http2.connection import FRAME_SIZE

GET = [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/")]


@dataclass
class FakeConnector:
    """cloudflared's side: an HTTP/2 server whose answers the test scripts."""

    h2: h2.connection.H2Connection
    writer: asyncio.StreamWriter
    requests: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    got: asyncio.Event = field(default_factory=asyncio.Event)

    def flush(self) -> None:
        self.writer.write(self.h2.data_to_send())


@pytest.fixture
async def pair() -> AsyncIterator[tuple[EdgeH2Connection, FakeConnector]]:
    fakes: list[FakeConnector] = []
    ready = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        fake = FakeConnector(conn, writer)
        fake.flush()
        fakes.append(fake)
        ready.set()
        while data := await reader.read(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    fake.requests[event.stream_id] = [(str(n), str(v)) for n, v in event.headers]
                    fake.got.set()
            fake.flush()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    _, edge = await asyncio.get_running_loop().create_connection(
        EdgeH2Connection, *server.sockets[0].getsockname()[:2])
    await ready.wait()
    try:
        yield edge, fakes[0]
    finally:
        edge.close()
        server.close()


async def _until(cond: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not cond():  # noqa: ASYNC110 - polling a plain predicate
            await asyncio.sleep(0.01)


async def test_data_stream_maps_both_heads(
    pair: tuple[EdgeH2Connection, FakeConnector],
) -> None:
    edge, fake = pair
    stream = edge.open_stream()
    await stream.send_request(build_connect_request(
        "GET", "app.example", "/p?q=1", [("Accept", "*/*")], scheme="http"), end_stream=True)
    await _until(lambda: bool(fake.requests))
    sid, headers = next(iter(fake.requests.items()))
    assert headers == [(":method", "GET"), (":scheme", "http"), (":authority", "app.example"),
                       (":path", "/p?q=1"), ("accept", "*/*")]
    fake.h2.send_headers(sid, [
        (":status", "200"),
        ("cf-cloudflared-response-headers", encode_serialized_headers([("X-A", "1")])),
        ("cf-cloudflared-response-meta", '{"src":"origin"}')])
    fake.h2.send_data(sid, b"hi", end_stream=True)
    fake.flush()
    head = await stream.receive_response()
    assert parse_http_response(head) == (200, [("X-A", "1")])
    assert await stream.read() == b"hi" and await stream.read() == b""


async def test_non_ascii_serialized_headers_are_a_decode_error(
    pair: tuple[EdgeH2Connection, FakeConnector],
) -> None:
    """A connector's non-ASCII `cf-cloudflared-response-headers` is a typed DecodeError (the
    exchange answers 502), not a ValueError escaping the response path."""
    edge, fake = pair
    stream = edge.open_stream()
    await stream.send_request(build_connect_request(
        "GET", "app.example", "/", [], scheme="http"), end_stream=True)
    await _until(lambda: bool(fake.requests))
    sid = next(iter(fake.requests))
    fake.h2.send_headers(sid, [(":status", "200"),
                               ("cf-cloudflared-response-headers", "WC1B:\u00e9t\u00e9"),
                               ("cf-cloudflared-response-meta", '{"src":"origin"}')])
    fake.flush()
    with pytest.raises(DecodeError, match="bad base64"):
        await stream.receive_response()


async def test_unread_response_holds_at_most_one_window(
    pair: tuple[EdgeH2Connection, FakeConnector],
) -> None:
    edge, fake = pair
    stream = H2Stream(edge)
    stream.send_headers(GET, end_stream=True)
    assert stream.stream_id is not None
    await _until(lambda: bool(fake.requests))
    fake.h2.send_headers(stream.stream_id, [(":status", "200")])
    # the edge announced 64 KiB frames and takes them from the start
    assert fake.h2.max_outbound_frame_size == FRAME_SIZE
    sent = 0
    while (room := fake.h2.local_flow_control_window(stream.stream_id)) > 0:
        n = min(room, fake.h2.max_outbound_frame_size)
        fake.h2.send_data(stream.stream_id, b"x" * n)
        sent += n
    fake.flush()
    assert sent == WINDOW  # the edge's stream window is the bound
    await _until(lambda: sum(map(len, stream._chunks)) == WINDOW)
    got = 0
    while got < WINDOW:
        got += len(await stream.read())
    await _until(lambda: fake.h2.local_flow_control_window(stream.stream_id) > 0)


async def test_goaway_fails_unprocessed_streams(
    pair: tuple[EdgeH2Connection, FakeConnector],
) -> None:
    edge, fake = pair
    stream = H2Stream(edge)
    stream.send_headers(GET, end_stream=True)
    assert stream.stream_id is not None
    await _until(lambda: bool(fake.requests))
    fake.h2.close_connection(last_stream_id=0)
    fake.flush()
    with pytest.raises(TransportClosedError):
        await stream.response_headers()
    assert edge.closed and not edge.terminated
    with pytest.raises(TransportClosedError):
        edge.open_stream()


async def test_a_request_head_body_and_end_leave_in_one_write(
    pair: tuple[EdgeH2Connection, FakeConnector],
) -> None:
    """Frames queued in one pass of the loop go out together (one TLS record and one
    send() on a real connection), not one write per frame."""
    edge, fake = pair
    await _until(lambda: not edge._flush_handle)  # the preface and SETTINGS are out
    transport = edge._transport
    assert transport is not None
    writes: list[bytes] = []
    write = transport.write

    def counting(data: bytes) -> None:
        writes.append(bytes(data))
        write(data)

    transport.write = counting  # type: ignore[method-assign]
    stream = edge.open_stream()
    await stream.send_request(build_connect_request(
        "POST", "app.example", "/", [("Content-Length", "4")], scheme="http"),
        end_stream=False)
    await stream.write(b"body")
    stream.write_eof()
    await _until(lambda: bool(fake.requests) and bool(writes))
    assert len(writes) == 1, writes


async def test_heads_never_enter_the_peers_hpack_table(
    pair: tuple[EdgeH2Connection, FakeConnector],
) -> None:
    edge, fake = pair
    for i in range(3):
        stream = edge.open_stream()
        await stream.send_request(build_connect_request(
            "GET", "app.example", "/", [("Cf-Ray", f"{i:016x}-LOC"), ("Accept", "*/*")],
            scheme="http"), end_stream=True)
    await _until(lambda: len(fake.requests) == 3)
    rays = [value for head in fake.requests.values() for name, value in head if name == "cf-ray"]
    assert rays == [f"{i:016x}-LOC" for i in range(3)]
    # every field is a static index or a literal without indexing: the peer's table stays
    # empty (no per-request cf-ray churning it, no credentials in a compression context)
    assert list(fake.h2.decoder.header_table.dynamic_entries) == []
    assert fake.h2.decoder.header_table.maxsize == 0  # we announced a table of 0 bytes


async def test_a_noisy_but_conforming_connector_is_read(
    pair: tuple[EdgeH2Connection, FakeConnector],
) -> None:
    """An informational head, padding, trailers, a PING and SETTINGS changes from the
    connector: the edge reads the final head and the body, and keeps the connection."""
    edge, fake = pair
    stream = H2Stream(edge)
    stream.send_headers(GET, end_stream=True)
    assert stream.stream_id is not None
    sid = stream.stream_id
    await _until(lambda: bool(fake.requests))
    fake.h2.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 128,
                             h2.settings.SettingCodes.MAX_FRAME_SIZE: 1 << 18})
    fake.h2.ping(b"12345678")
    fake.h2.send_headers(sid, [(":status", "103"), ("link", "</a>; rel=preload")])
    fake.h2.send_headers(sid, [(":status", "200"), ("cf-cloudflared-response-meta",
                                                   '{"src":"origin"}')])
    fake.h2.send_data(sid, b"body", pad_length=100)
    fake.h2.send_headers(sid, [("grpc-status", "0")], end_stream=True)
    fake.flush()
    head = await stream.response_headers()
    assert head[0] == (":status", "200")
    assert await stream.read() == b"body" and await stream.read() == b""
    second = H2Stream(edge)  # after the table size change our heads still decode
    second.send_headers(GET, end_stream=True)
    await _until(lambda: len(fake.requests) == 2)
    assert list(fake.requests.values())[1] == GET
    assert not edge.terminated
