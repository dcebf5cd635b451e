"""Private-routing TCP streams (`type = tcp`) at the connector, opened by the real edge's QUIC
connection: refused unless warp-routing is enabled, then cloudflared's bytes on the wire."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nbtunnel.connector.ingress import Ingress
from nbtunnel.core.streams import (
    ConnectionType,
    ConnectRequest,
    ConnectResponse,
    HeadParser,
    encode_connect_request,
)
from tests.access.conftest import EchoServer, StartTunnel

VECTORS = Path(__file__).resolve().parent.parent / "vectors"


async def _open(t: object, dest: str, payload: bytes) -> tuple[ConnectResponse, bytes, bytes]:
    live = t.edge.registry.connections()[0]  # type: ignore[attr-defined]
    stream = live.transport.open_stream()
    await stream.write(encode_connect_request(
        ConnectRequest(dest, ConnectionType.TCP, [("FlowID", "flow-1")])))
    parser = HeadParser("response")
    raw = b""
    head = None
    while head is None:
        data = await asyncio.wait_for(stream.read(65536), 10)
        assert data, "the connector closed the stream before answering"
        raw += data
        head = parser.feed(data)
    assert isinstance(head, ConnectResponse)
    if head.error:
        return head, raw, b""
    await stream.write(payload)
    stream.write_eof()  # half-close: the echo origin still answers after our FIN
    body = parser.rest
    while data := await asyncio.wait_for(stream.read(65536), 10):
        body += data
    return head, raw[: len(raw) - len(parser.rest)], body


def _ingress(warp: object) -> Ingress:
    return Ingress.from_rules([{"service": "http_status:404"}], {}, warp)


async def test_refused_without_warp_routing(start: StartTunnel, echo: EchoServer) -> None:
    t = await start(_ingress(None))
    head, _, _ = await _open(t, echo.address, b"x")
    assert "warp-routing is not enabled" in head.error
    assert echo.connections == []


async def test_served_with_warp_routing_as_cloudflared(start: StartTunnel,
                                                       echo: EchoServer) -> None:
    t = await start(_ingress({"enabled": True, "connectTimeout": "2s"}))
    head, raw_head, body = await _open(t, echo.address, b"raw-tcp-bytes")
    assert head.error == "" and head.metadata == []
    # cloudflared's captured ack is byte-for-byte the same preamble + empty ConnectResponse
    assert raw_head == (VECTORS / "quic-data-tcp-c2e.bin").read_bytes()[:48]
    assert body == b"raw-tcp-bytes" + echo.tail
    assert echo.connections == ["eof"]


async def test_destination_must_be_an_ip(start: StartTunnel) -> None:
    t = await start(_ingress({"enabled": True}))
    head, _, _ = await _open(t, "localhost:22", b"")
    assert "not an IP address" in head.error


def test_vector_request_decodes_as_tcp() -> None:
    parser = HeadParser("request")
    head = parser.feed((VECTORS / "quic-data-tcp-e2c.bin").read_bytes())
    assert isinstance(head, ConnectRequest)
    assert (head.type, head.dest, head.metadata) == (ConnectionType.TCP, "127.0.0.1:28081",
                                                     [("FlowID", "flow-1")])
    assert parser.rest == b"raw-tcp-bytes"


async def test_websocket_vector_against_a_tcp_rule(start: StartTunnel) -> None:
    """cloudflared's captured exchange for a `tcp://` rule: our connector answers the same
    ConnectResponse (as a set) and the same server frames, Close included."""

    async def prefix_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(b"echo:" + data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(prefix_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        t = await start(f"tcp://127.0.0.1:{port}")
        e2c = (VECTORS / "quic-data-ws-e2c.bin").read_bytes()
        c2e = (VECTORS / "quic-data-ws-c2e.bin").read_bytes()
        want_parser = HeadParser("response")
        want = want_parser.feed(c2e)
        assert isinstance(want, ConnectResponse)
        live = t.edge.registry.connections()[0]
        stream = live.transport.open_stream()
        frames = e2c[416:]  # after the ConnectRequest: "hello", "world", close 1000
        await stream.write(e2c[:416])
        parser = HeadParser("response")
        head = None
        while head is None:
            head = parser.feed(await asyncio.wait_for(stream.read(65536), 10))
        assert isinstance(head, ConnectResponse)
        assert sorted(head.metadata) == sorted(want.metadata)
        got = parser.rest
        for frame, answer in ((frames[:11], b"\x82\necho:hello"),
                              (frames[11:22], b"\x82\necho:world")):
            await stream.write(frame)
            while len(got) < len(answer):
                got += await asyncio.wait_for(stream.read(65536), 10)
            assert got == answer
            got = b""
        await stream.write(frames[22:])
        while data := await asyncio.wait_for(stream.read(65536), 10):
            got += data
        assert got == b"\x88\x02\x03\xe8"
        assert want_parser.rest.endswith(got)
    finally:
        server.close()
