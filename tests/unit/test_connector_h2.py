"""The connector's HTTP/2 adaptation: request heads, response heads, protocol flag."""

from __future__ import annotations

from typing import Any

from nbtunnel.cli.parser import build_parser
from nbtunnel.connector.h2proxy import connect_request, response_headers
from nbtunnel.connector.h2transport import H2ServerStream
from nbtunnel.core.h2headers import (
    RESPONSE_HEADERS,
    RESPONSE_META,
    decode_serialized_headers,
    encode_serialized_headers,
)
from nbtunnel.core.httpmeta import build_connect_response, parse_http_request
from nbtunnel.core.streams import ConnectionType, ConnectResponse


def _stream(headers: list[tuple[str, str]], *, ended: bool) -> H2ServerStream:
    conn: Any = None  # the pure helpers never touch the connection
    stream = H2ServerStream(conn, 1, headers)
    stream.ended = ended
    return stream


async def test_request_head_becomes_connect_request() -> None:
    stream = _stream([(":method", "POST"), (":scheme", "http"), (":authority", "a.example"),
                      (":path", "/x?y=1"), ("x-test", "yes"), ("content-length", "3")],
                     ended=False)
    head = parse_http_request(connect_request(stream))
    assert (head.method, head.host, head.target) == ("POST", "a.example", "/x?y=1")
    assert head.headers == [("x-test", "yes"), ("content-length", "3")]
    assert not head.websocket


async def test_websocket_and_unknown_length_body() -> None:
    ws = connect_request(_stream([(":method", "GET"), (":path", "/ws"),
                                  ("cf-cloudflared-proxy-connection-upgrade", "websocket")],
                                 ended=False))
    assert ws.type == ConnectionType.WEBSOCKET
    assert "localhost:8080" in ws.dest  # cloudflared's default authority
    assert not any("cf-cloudflared" in k for k, _ in ws.metadata)
    body = parse_http_request(connect_request(_stream(
        [(":method", "PUT"), (":authority", "h"), (":path", "/")], ended=False)))
    assert ("transfer-encoding", "chunked") in body.headers


def test_response_heads() -> None:
    ok = dict(response_headers(build_connect_response(
        101, [("Sec-WebSocket-Accept", "abc"), ("Cf-Int-X", "1"), ("X-A", "b")])))
    assert ok[":status"] == "200"
    assert ok[RESPONSE_META] == '{"src":"origin"}'
    assert decode_serialized_headers(ok[RESPONSE_HEADERS]) == [
        ("Sec-WebSocket-Accept", "abc"), ("X-A", "b")]
    err = dict(response_headers(ConnectResponse(error="refused", metadata=[])))
    assert err == {":status": "502", RESPONSE_META: '{"src":"cloudflared"}'}


def test_serialized_headers_round_trip() -> None:
    pairs = [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-E", "")]
    assert decode_serialized_headers(encode_serialized_headers(pairs)) == pairs


def test_cli_protocol_choices() -> None:
    for value in ("quic", "http2", "auto"):
        args = build_parser().parse_args(["tunnel", "--url", "8000", "--protocol", value])
        assert args.protocol == value
