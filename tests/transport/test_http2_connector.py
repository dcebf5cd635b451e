"""The connector's role over HTTP/2 against a scripted fake edge (h2 client side, plain TCP)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from nbtunnel.core.h2headers import RESPONSE_HEADERS, decode_serialized_headers
from nbtunnel.core.httpmeta import build_connect_response, parse_http_request
from nbtunnel.core.streams import ConnectRequest
from nbtunnel.transport.errors import TransportClosedError
from nbtunnel.transport.http2 import ConnectorH2Connection, H2ConfigurationPush
from nbtunnel.transport.http2.connection import ACK_FLOOD

UPGRADE = "cf-cloudflared-proxy-connection-upgrade"


@dataclass
class FakeEdge:
    """The edge's side: an HTTP/2 client whose requests the test scripts."""

    h2: h2.connection.H2Connection
    writer: asyncio.StreamWriter
    responses: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    data: dict[int, bytes] = field(default_factory=dict)
    resets: dict[int, int] = field(default_factory=dict)
    goaway: dict[int, int] = field(default_factory=dict)  # {0: error code}
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def request(self, headers: list[tuple[str, str]], body: bytes | None = None) -> int:
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, headers, end_stream=body is None)
        if body is not None:
            self.h2.send_data(sid, body, end_stream=True)
        self.writer.write(self.h2.data_to_send())
        return sid

    async def until(self, what: str, sid: int) -> None:
        async with asyncio.timeout(5):
            while sid not in getattr(self, what):
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def pair() -> AsyncIterator[tuple[ConnectorH2Connection, FakeEdge]]:
    edges: list[FakeEdge] = []
    ready = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        fake = FakeEdge(conn, writer)
        edges.append(fake)
        ready.set()
        while data := await reader.read(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    fake.responses[event.stream_id] = [(str(n), str(v)) for n, v in event.headers]
                elif isinstance(event, h2.events.DataReceived):
                    fake.data[event.stream_id] = fake.data.get(event.stream_id, b"") + event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    fake.resets[event.stream_id] = event.error_code
                elif isinstance(event, h2.events.ConnectionTerminated):
                    fake.goaway[0] = event.error_code
                fake.changed.set()
            writer.write(conn.data_to_send())

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    _, connector = await asyncio.get_running_loop().create_connection(
        ConnectorH2Connection, *server.sockets[0].getsockname()[:2])
    await ready.wait()
    try:
        yield connector, edges[0]
    finally:
        connector.close()
        server.close()


GET = [(":method", "GET"), (":scheme", "http"), (":authority", "app.example"), (":path", "/x")]


async def test_control_stream_is_the_marked_request_and_others_are_refused(
    pair: tuple[ConnectorH2Connection, FakeEdge],
) -> None:
    connector, edge = pair
    early = edge.request(GET)  # before the control stream: refused
    control_sid = edge.request([*GET, (UPGRADE, "control-stream")], body=None)
    control = await asyncio.wait_for(connector.control_stream(), 5)
    await edge.until("resets", early)
    await edge.until("responses", control_sid)
    assert dict(edge.responses[control_sid])[":status"] == "200"
    await control.write(b"rpc bytes")
    await edge.until("data", control_sid)
    assert edge.data[control_sid] == b"rpc bytes"


async def test_a_request_is_one_data_stream_with_mapped_heads(
    pair: tuple[ConnectorH2Connection, FakeEdge],
) -> None:
    connector, edge = pair
    sid = edge.request([*GET, ("x-test", "1")])
    stream = await asyncio.wait_for(connector.accept_stream(), 5)
    head = await stream.receive_request()
    assert isinstance(head, ConnectRequest)
    http = parse_http_request(head)
    assert (http.method, http.host, http.target, http.headers) == (
        "GET", "app.example", "/x", [("x-test", "1")])
    await stream.send_response(build_connect_response(200, [("X-Origin", "o")]))
    await stream.write(b"body")
    stream.write_eof()
    await edge.until("responses", sid)
    fields = dict(edge.responses[sid])
    assert fields[":status"] == "200"
    assert decode_serialized_headers(fields[RESPONSE_HEADERS]) == [("X-Origin", "o")]
    await edge.until("data", sid)
    assert edge.data[sid] == b"body"


async def test_configuration_push_is_a_json_request(
    pair: tuple[ConnectorH2Connection, FakeEdge],
) -> None:
    connector, edge = pair
    sid = edge.request([(":method", "PUT"), (":scheme", "http"), (":authority", "localhost"),
                        (":path", "/"), (UPGRADE, "update-configuration")],
                       body=b'{"version":4,"config":{"ingress":[]}}')
    stream = await asyncio.wait_for(connector.accept_stream(), 5)
    push = await stream.receive_request()
    assert isinstance(push, H2ConfigurationPush)
    seen: list[tuple[int, bytes]] = []
    await push.serve(lambda version, config: (seen.append((version, config)), (version, ""))[1])
    assert seen == [(4, b'{"ingress":[]}')]
    await edge.until("data", sid)
    assert json.loads(edge.data[sid]) == {"lastAppliedVersion": 4, "err": None}


async def test_goaway_from_the_edge_ends_the_connection(
    pair: tuple[ConnectorH2Connection, FakeEdge],
) -> None:
    connector, edge = pair
    accepting = asyncio.create_task(connector.accept_stream())
    edge.h2.close_connection()
    edge.writer.write(edge.h2.data_to_send())
    with pytest.raises(TransportClosedError):
        await asyncio.wait_for(accepting, 5)
    assert connector.terminated and "GOAWAY" in connector.close_reason


async def test_a_protocol_error_from_the_edge_ends_the_connection_with_goaway(
    pair: tuple[ConnectorH2Connection, FakeEdge],
) -> None:
    connector, edge = pair
    accepting = asyncio.create_task(connector.accept_stream())
    edge.writer.write(b"\x00\x00\x04\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00")  # increment 0
    with pytest.raises(TransportClosedError):
        await asyncio.wait_for(accepting, 5)
    assert connector.terminated and "PROTOCOL_ERROR" in connector.close_reason
    await edge.until("goaway", 0)
    assert edge.goaway[0] == 1  # PROTOCOL_ERROR


async def test_pings_while_the_edge_reads_nothing_end_the_connection(
    pair: tuple[ConnectorH2Connection, FakeEdge],
) -> None:
    """ACKs are not queued without bound for a peer that sends PINGs but reads nothing."""
    connector, edge = pair
    connector.pause_writing()  # what the socket does once the edge stops reading
    accepting = asyncio.create_task(connector.accept_stream())
    ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"12345678"
    edge.writer.write(ping * (ACK_FLOOD + 1))
    with pytest.raises(TransportClosedError):
        await asyncio.wait_for(accepting, 5)
    assert "flood" in connector.close_reason


async def test_a_noisy_but_conforming_edge_is_served(
    pair: tuple[ConnectorH2Connection, FakeEdge],
) -> None:
    """What a conforming edge other than ours may send: padding, PRIORITY, PING, an unknown
    frame type and setting, SETTINGS changes mid-connection (a smaller header table, a small
    initial window, bigger frames), a head split over CONTINUATION frames."""
    connector, edge = pair
    conn = edge.h2
    control = edge.request([*GET, (UPGRADE, "control-stream")])
    await asyncio.wait_for(connector.control_stream(), 5)
    await edge.until("responses", control)
    conn.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0,
                          h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000,
                          h2.settings.SettingCodes.MAX_FRAME_SIZE: 1 << 20})
    conn.ping(b"pingpong")
    sid = conn.get_next_available_stream_id()
    big = [(f"x-big-{i}", "b" * 1000) for i in range(30)]  # > 16 KiB: CONTINUATION frames
    conn.send_headers(sid, [*GET, *big, ("content-length", "5")], priority_weight=32)
    conn.prioritize(sid, weight=100)
    conn.send_data(sid, b"hello", pad_length=40, end_stream=True)
    extension = b"\x00\x00\x03\xfa\x00\x00\x00\x00\x00abc"  # unknown frame type 0xFA
    unknown_setting = b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x42\x42\x00\x00\x00\x07"
    edge.writer.write(conn.data_to_send() + extension + unknown_setting)
    stream = await asyncio.wait_for(connector.accept_stream(), 5)
    head = await stream.receive_request()
    assert isinstance(head, ConnectRequest)
    assert ("x-big-29", "b" * 1000) in parse_http_request(head).headers
    assert await stream.read() == b"hello" and await stream.read() == b""
    await stream.send_response(build_connect_response(200, [("X-Origin", "o")]))
    await stream.write(b"z" * 5000)  # beyond the 1000-byte window the edge granted
    stream.write_eof()
    await edge.until("responses", sid)
    async with asyncio.timeout(5):
        while len(edge.data.get(sid, b"")) < 5000:  # the fixture credits DATA as it arrives
            edge.changed.clear()
            await edge.changed.wait()
    assert edge.data[sid] == b"z" * 5000
    assert not connector.terminated
