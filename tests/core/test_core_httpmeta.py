"""HTTP head <-> ConnectRequest/ConnectResponse metadata mapping."""

from __future__ import annotations

import pytest

from nbtunnel.core.errors import DecodeError
from nbtunnel.core.httpmeta import (
    build_connect_request,
    build_connect_response,
    error_connect_response,
    parse_http_request,
    parse_http_response,
    request_has_body,
)
from nbtunnel.core.streams import ConnectionType, ConnectRequest, ConnectResponse


def test_build_request_keeps_order_and_repeats() -> None:
    req = build_connect_request("GET", "probe.example", "/hello?x=1",
                                [("Accept", "a"), ("X-Multi", "1"), ("X-Multi", "2")])
    assert req == ConnectRequest("https://probe.example/hello?x=1", ConnectionType.HTTP, [
        ("HttpMethod", "GET"), ("HttpHost", "probe.example"), ("HttpHeader:Accept", "a"),
        ("HttpHeader:X-Multi", "1"), ("HttpHeader:X-Multi", "2")])
    ws = build_connect_request("GET", "h", "/ws", [], scheme="http", websocket=True)
    assert ws.type == ConnectionType.WEBSOCKET and ws.dest == "http://h/ws"


def test_parse_request_round_trip() -> None:
    headers = [("User-Agent", "t"), ("X-Multi", "a"), ("X-Multi", "b")]
    head = parse_http_request(build_connect_request("POST", "h.example", "/p?q=1", headers))
    assert (head.method, head.host, head.dest, head.headers, head.websocket) == (
        "POST", "h.example", "https://h.example/p?q=1", headers, False)
    assert head.target == "/p?q=1"


def test_parse_request_path_only_dest_and_other_keys() -> None:
    req = ConnectRequest("/only/path", ConnectionType.HTTP,
                         [("HttpMethod", "GET"), ("FlowID", "x"), ("cf-trace-id", "y")])
    head = parse_http_request(req)
    assert head.target == "/only/path" and head.headers == [] and head.host == ""
    absolute = ConnectRequest("http://a.example:81/x", ConnectionType.HTTP, [("HttpMethod", "GET")])
    assert parse_http_request(absolute).host == "a.example:81"


@pytest.mark.parametrize("metadata", [
    [("HttpHost", "h")],
    [("HttpMethod", "")],
    [("HttpMethod", "GET"), ("HttpHeader:a:b", "v")],
    [("HttpMethod", "GET"), ("HttpHeader:", "v")],
])
def test_parse_request_errors(metadata: list[tuple[str, str]]) -> None:
    with pytest.raises(DecodeError):
        parse_http_request(ConnectRequest("/", ConnectionType.HTTP, metadata))


@pytest.mark.parametrize(("headers", "expected"), [
    ([], False),
    ([("Content-Length", "0")], False),
    ([("content-length", "11")], True),
    ([("Content-Length", "junk")], False),
    ([("Transfer-Encoding", "gzip, Chunked")], True),
    ([("Transfer-Encoding", "identity")], False),
])
def test_request_has_body(headers: list[tuple[str, str]], expected: bool) -> None:
    assert request_has_body(headers) is expected


def test_response_round_trip() -> None:
    resp = build_connect_response(200, [("Content-Type", "x"), ("Set-Cookie", "a"),
                                        ("Set-Cookie", "b")])
    assert resp.metadata[0] == ("HttpStatus", "200") and resp.error == ""
    assert parse_http_response(resp) == (200, [("Content-Type", "x"), ("Set-Cookie", "a"),
                                               ("Set-Cookie", "b")])
    assert error_connect_response("boom") == ConnectResponse("boom", [])


@pytest.mark.parametrize("metadata", [
    [],
    [("HttpStatus", "abc")],
    [("HttpStatus", "20")],
    [("HttpStatus", "099")],
    [("HttpStatus", "\uff12\uff10\uff10")],  # fullwidth digits
    [("HttpStatus", "200"), ("HttpHeader:x:y", "z")],
])
def test_parse_response_errors(metadata: list[tuple[str, str]]) -> None:
    with pytest.raises(DecodeError):
        parse_http_response(ConnectResponse("", metadata))
