"""The HTTP/2 transport's header translation, against the captured cloudflared h2 vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbtunnel.core.errors import DecodeError
from nbtunnel.core.httpmeta import build_connect_request, parse_http_response
from nbtunnel.core.streams import ConnectResponse, HeadParser
from nbtunnel.edge.h2wire import (
    RESPONSE_HEADERS,
    connect_response,
    decode_serialized_headers,
    encode_serialized_headers,
    request_headers,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
ORIGIN_HEADERS = {
    ("Server", "VectorOrigin/1.0"),
    ("Date", "Thu, 01 Jan 2026 00:00:00 GMT"),
    ("Content-Type", "application/json"),
    ("X-Origin", "vector-origin"),
}


def _vector(name: str) -> list[tuple[str, str]]:
    return [(n, v) for n, v in json.loads((VECTORS / f"h2-{name}-response-headers.json")
                                          .read_text())]


def _field(headers: list[tuple[str, str]], name: str) -> str:
    return next(v for n, v in headers if n == name)


@pytest.mark.parametrize(("name", "length"), [("get", "52"), ("post", "53")])
def test_decode_origin_headers(name: str, length: str) -> None:
    decoded = decode_serialized_headers(_field(_vector(name), RESPONSE_HEADERS))
    assert set(decoded) == ORIGIN_HEADERS | {("Content-Length", length)}
    assert len(decoded) == 5


def test_decode_websocket_headers_and_round_trip() -> None:
    value = _field(_vector("ws"), RESPONSE_HEADERS)
    decoded = decode_serialized_headers(value)
    assert set(decoded) == {("Upgrade", "websocket"), ("Connection", "Upgrade"),
                            ("Sec-Websocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")}
    assert encode_serialized_headers(decoded) == value  # unpadded, same order
    assert "=" not in value


def test_decode_empty_and_malformed() -> None:
    assert decode_serialized_headers("") == []
    for bad in ("nocolon", ":dmFs", "!!!:dmFs", "\u00e9:dmFs", "dmFs:\u00e9", "dmFs:\u2603"):
        with pytest.raises(DecodeError):
            decode_serialized_headers(bad)


def _response(raw: bytes) -> ConnectResponse:
    head = HeadParser("response").feed(raw)
    assert isinstance(head, ConnectResponse)
    return head


def test_origin_response_becomes_connect_response() -> None:
    resp = _response(connect_response(200, _vector("get"), websocket=False))
    assert not resp.error
    status, headers = parse_http_response(resp)
    assert status == 200 and set(headers) == ORIGIN_HEADERS | {("Content-Length", "52")}
    status, headers = parse_http_response(
        _response(connect_response(404, _vector("404"), websocket=False)))
    assert (status, headers) == (404, [])


def test_cloudflared_error_becomes_connect_response_error() -> None:
    resp = _response(connect_response(502, _vector("refused"), websocket=False))
    assert resp.error and resp.metadata == []


def test_websocket_200_is_the_101() -> None:
    status, _ = parse_http_response(_response(connect_response(200, _vector("ws"),
                                                               websocket=True)))
    assert status == 101
    status, _ = parse_http_response(_response(connect_response(200, _vector("get"),
                                                               websocket=True)))
    assert status == 200  # a plain 200 without the handshake headers is not an upgrade


def test_request_headers_match_the_captured_requests() -> None:
    requests = json.loads((VECTORS / "h2-requests.json").read_text())
    get = requests["get"]["headers"]
    extra = [(n, v) for n, v in get if not n.startswith(":")]
    req = build_connect_request("GET", "probe.example", "/hello?x=1&y=two",
                                [("Host", "probe.example"), *extra], scheme="http")
    headers, has_body = request_headers(req)
    assert headers == [tuple(h) for h in get] and not has_body

    post = requests["post"]["headers"]
    req = build_connect_request("POST", "probe.example", "/post",
                                [(n, v) for n, v in post if not n.startswith(":")],
                                scheme="http")
    headers, has_body = request_headers(req)
    assert headers == [tuple(h) for h in post] and has_body

    ws = requests["ws"]["headers"]
    req = build_connect_request("GET", "tcp.example", "/ws",
                                [("Connection", "Upgrade"), ("Upgrade", "websocket"),
                                 ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
                                 ("Sec-WebSocket-Version", "13")],
                                scheme="http", websocket=True)
    headers, has_body = request_headers(req)
    assert headers == [tuple(h) for h in ws] and has_body
