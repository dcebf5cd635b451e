"""HTTP/2 heads <-> ConnectRequest/ConnectResponse, both roles, against the captured h2 vectors."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbtunnel.core.errors import DecodeError
from nbtunnel.core.h2headers import (
    META_ORIGIN,
    PROXY_SRC_HEADER,
    RESPONSE_HEADERS,
    RESPONSE_META,
    UPGRADE_HEADER,
    connect_request,
    connect_response,
    decode_serialized_headers,
    encode_serialized_headers,
    request_headers,
    response_headers,
)
from nbtunnel.core.http1 import HOP_BY_HOP
from nbtunnel.core.httpmeta import (
    build_connect_request,
    build_connect_response,
    parse_http_request,
    parse_http_response,
    request_has_body,
)
from nbtunnel.core.streams import ConnectionType, ConnectRequest, ConnectResponse

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


def test_origin_response_becomes_connect_response() -> None:
    resp = connect_response(200, _vector("get"), websocket=False)
    assert not resp.error
    status, headers = parse_http_response(resp)
    assert status == 200 and set(headers) == ORIGIN_HEADERS | {("Content-Length", "52")}
    status, headers = parse_http_response(connect_response(404, _vector("404"), websocket=False))
    assert (status, headers) == (404, [])


def test_cloudflared_error_becomes_connect_response_error() -> None:
    resp = connect_response(502, _vector("refused"), websocket=False)
    assert resp.error and resp.metadata == []


def test_websocket_200_is_the_101() -> None:
    status, _ = parse_http_response(connect_response(200, _vector("ws"), websocket=True))
    assert status == 101
    status, _ = parse_http_response(connect_response(200, _vector("get"), websocket=True))
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


# -- the connector's role: request heads in, response heads out ------------------------------


def test_request_head_becomes_connect_request() -> None:
    req = connect_request([(":method", "POST"), (":scheme", "http"), (":authority", "a.example"),
                           (":path", "/x?y=1"), ("x-test", "yes"), ("content-length", "3")],
                          ended=False)
    head = parse_http_request(req)
    assert (head.method, head.host, head.target) == ("POST", "a.example", "/x?y=1")
    assert head.headers == [("x-test", "yes"), ("content-length", "3")]
    assert not head.websocket


def test_websocket_and_unknown_length_body() -> None:
    ws = connect_request([(":method", "GET"), (":path", "/ws"),
                          ("cf-cloudflared-proxy-connection-upgrade", "websocket")], ended=False)
    assert ws.type == ConnectionType.WEBSOCKET
    assert "localhost:8080" in ws.dest  # cloudflared's default authority
    assert not any("cf-cloudflared" in k for k, _ in ws.metadata)
    body = parse_http_request(connect_request(
        [(":method", "PUT"), (":authority", "h"), (":path", "/")], ended=False))
    assert ("transfer-encoding", "chunked") in body.headers
    done = parse_http_request(connect_request(
        [(":method", "PUT"), (":authority", "h"), (":path", "/")], ended=True))
    assert ("transfer-encoding", "chunked") not in done.headers


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


@pytest.mark.parametrize("name", ["get", "post", "404"])
def test_both_roles_round_trip_the_captured_response(name: str) -> None:
    """The connector's head for an origin response maps back to the same status and headers
    on the edge (as cloudflared's own head does, checked above)."""
    status, origin = parse_http_response(connect_response(
        int(dict(_vector(name)).get(":status", "200")), _vector(name), websocket=False))
    again = response_headers(build_connect_response(status, origin))
    assert parse_http_response(connect_response(status, again, websocket=False)) == (
        status, origin)


# The edge's per-request mappings against the plain rules (each written as one step per rule).

def _reference_request_headers(req: ConnectRequest) -> tuple[list[tuple[str, str]], bool]:
    method, authority = "GET", ""
    extra: list[tuple[str, str]] = []
    for key, value in req.metadata:
        if key == "HttpMethod":
            method = value
        elif key == "HttpHost":
            authority = value
        elif key.startswith("HttpHeader:"):
            extra.append((key.split(":", 1)[1], value))
    parts = urlsplit(req.dest)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    websocket = req.type == ConnectionType.WEBSOCKET
    headers = [(":method", method), (":scheme", parts.scheme or "http"),
               (":authority", authority or parts.netloc), (":path", path)]
    if websocket:
        headers.append(("cf-cloudflared-proxy-connection-upgrade", "websocket"))
    drop = (HOP_BY_HOP - {"trailer"}) | {"host"}
    headers += [(n.lower(), v) for n, v in extra if n.lower() not in drop]
    return headers, websocket or request_has_body(extra)


def _reference_connect_response(status: int, headers: list[tuple[str, str]]
                                ) -> ConnectResponse | type[Exception]:
    fields = {n.lower(): v for n, v in headers if not n.startswith(":")}
    text = fields.get(RESPONSE_META, "")
    try:
        meta = json.loads(text) if text else {}
    except (ValueError, RecursionError):
        meta = {}
    if isinstance(meta, dict) and meta.get("src") == "cloudflared":
        return ConnectResponse(
            error=f"the connector could not serve the request (HTTP/2 status {status})",
            metadata=[])
    try:
        origin = decode_serialized_headers(fields.get(RESPONSE_HEADERS, ""))
    except DecodeError:
        return DecodeError
    if status == 200 and any(n.lower() == "sec-websocket-accept" or (
            n.lower() == "upgrade" and v.lower() == "websocket") for n, v in origin):
        status = 101
    return build_connect_response(status, origin)


_KEYS = ["HttpMethod", "HttpHost", "HttpHeader:Host", "HttpHeader:Content-Length",
         "HttpHeader:transfer-encoding", "HttpHeader:Connection", "HttpHeader:TE",
         "HttpHeader:Trailer", "HttpHeader:X-A", "HttpHeader:x:y", "Other"]
_VALUES = ["", "0", "5", "x", "chunked", "a.example", "GET"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_KEYS), st.sampled_from(_VALUES)), max_size=7),
       st.sampled_from(["http://a.example/p?q=1", "https://b.example:8443/", "http://c/#f",
                        "http://d.example*", "ws://e/x?"]),
       st.booleans())
def test_request_headers_is_the_reference(metadata: list[tuple[str, str]], dest: str,
                                          websocket: bool) -> None:
    req = ConnectRequest(dest, ConnectionType.WEBSOCKET if websocket else ConnectionType.HTTP,
                         metadata)
    assert request_headers(req) == _reference_request_headers(req)


_SERIALIZED = [encode_serialized_headers([("Upgrade", "WebSocket")]),
               encode_serialized_headers([("X-A", "1"), ("Sec-WebSocket-Accept", "k")]),
               encode_serialized_headers([("Content-Type", "text/plain"), ("Upgrade", "h2c")]),
               "", "bad", "QQ:é", "QQ=:QQ"]
_META = [META_ORIGIN, '{"src":"cloudflared"}', "", "{", "[1]", '{"src": "origin"}', "[" * 3000]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([200, 101, 404]), st.sampled_from(_SERIALIZED), st.sampled_from(_META),
       st.sampled_from([RESPONSE_HEADERS, "CF-Cloudflared-Response-Headers"]),
       st.sampled_from([RESPONSE_META, "Cf-Cloudflared-Response-Meta"]))
def test_connect_response_is_the_reference(status: int, serialized: str, meta: str,
                                           headers_name: str, meta_name: str) -> None:
    headers = [(":status", str(status)), (headers_name, serialized), (meta_name, meta)]
    expected = _reference_connect_response(status, headers)
    try:
        got: ConnectResponse | type[Exception] = connect_response(status, headers,
                                                                  websocket=False)
    except DecodeError:
        got = DecodeError
    assert got == expected


# The connector's per-request mapping against the plain rules.

def _ref_connect_request(headers: list[tuple[str, str]], *, ended: bool) -> ConnectRequest:
    pseudo = {n: v for n, v in headers if n.startswith(":")}
    if any(n == PROXY_SRC_HEADER and v for n, v in headers):
        return ConnectRequest(dest=pseudo.get(":authority", ""), type=ConnectionType.TCP,
                              metadata=[])
    websocket = next((v for n, v in headers if n == UPGRADE_HEADER), "").lower() == "websocket"
    fields = [(n, v) for n, v in headers if not n.startswith(":") and n != UPGRADE_HEADER]
    if not websocket and not ended and not any(n == "content-length" for n, _ in fields):
        fields.append(("transfer-encoding", "chunked"))
    return build_connect_request(
        pseudo.get(":method", "GET"), pseudo.get(":authority") or "localhost:8080",
        pseudo.get(":path", "/"), fields, scheme=pseudo.get(":scheme") or "http",
        websocket=websocket)



_H2_NAMES = st.sampled_from([":method", ":path", ":authority", ":scheme", ":status",
                             UPGRADE_HEADER, PROXY_SRC_HEADER, "content-length", "x-a"])
_H2_VALUES = st.one_of(st.text(max_size=12), st.sampled_from(["websocket", "WebSocket", ""]))


@settings(max_examples=400, deadline=None, derandomize=True)
@given(st.lists(st.tuples(_H2_NAMES, _H2_VALUES), max_size=8), st.booleans())
def test_connect_request_is_the_reference(headers: list[tuple[str, str]], ended: bool) -> None:
    assert connect_request(headers, ended=ended) == _ref_connect_request(headers, ended=ended)


def test_long_serialized_names_are_not_cached() -> None:
    from nbtunnel.core import h2headers

    pairs = [("N" * 1000 + str(i), "v") for i in range(20)]
    assert decode_serialized_headers(encode_serialized_headers(pairs)) == pairs
    assert all(len(n) <= 64 for n in h2headers._NAMES_B64)
    assert all(len(n) <= 64 for n in h2headers._B64_NAMES)
