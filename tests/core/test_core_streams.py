"""Data-stream heads: golden decoding, golden encoding, incremental parsing, failures."""

from __future__ import annotations

import glob
import os

import pytest
from core_vectors import VECTORS, vector

from nbtunnel.core.errors import DecodeError
from nbtunnel.core.httpmeta import parse_http_request, parse_http_response
from nbtunnel.core.streams import (
    DATA_SIGNATURE,
    PROTOCOL_VERSION,
    RPC_SIGNATURE,
    ConnectionType,
    ConnectRequest,
    ConnectResponse,
    HeadParser,
    RpcStreamStart,
    encode_connect_request,
    encode_connect_response,
)

DATA_FILES = sorted(os.path.basename(p) for p in glob.glob(str(VECTORS / "quic-data-*.bin")))
# (file, head length, body) from the vectors README
HEADS = {
    "quic-data-get-e2c.bin": (528, b""),
    "quic-data-get-c2e.bin": (392, b'{"method":"GET","path":"/hello?x=1&y=two","body":""}'),
    "quic-data-post-e2c.bin": (288, b"hello=world"),
    "quic-data-post-c2e.bin": (392, b'{"method":"POST","path":"/post","body":"hello=world"}'),
    "quic-data-404-e2c.bin": (176, b""),
    "quic-data-404-c2e.bin": (88, b""),
    "quic-data-refused-e2c.bin": (176, b""),
    "quic-data-refused-c2e.bin": (216, b""),
    "quic-data-ws-e2c.bin": (416, bytes.fromhex("8285010203046967 6f686e8285050607 0872697564618882"
                                                "090a0b0c0ae2")),
    "quic-data-ws-c2e.bin": (272, b"\x82\necho:hello\x82\necho:world\x88\x02\x03\xe8"),
    "quic-data-tcp-e2c.bin": (104, b"raw-tcp-bytes"),
    "quic-data-tcp-c2e.bin": (48, b"echo:raw-tcp-bytes"),
}


def side(name: str) -> str:
    return "request" if "e2c" in name else "response"


def test_all_data_vectors_covered() -> None:
    assert sorted(HEADS) == DATA_FILES


@pytest.mark.parametrize("name", DATA_FILES)
def test_head_and_rest_split(name: str) -> None:
    data = vector(name)
    parser = HeadParser(side(name))  # type: ignore[arg-type]
    head = parser.feed(data)
    assert head is not None
    assert parser.rest == data[HEADS[name][0]:] == HEADS[name][1]


@pytest.mark.parametrize("name", DATA_FILES)
def test_byte_by_byte_feeding(name: str) -> None:
    data = vector(name)
    parser = HeadParser(side(name))  # type: ignore[arg-type]
    heads = [h for i in range(len(data)) if (h := parser.feed(data[i : i + 1])) is not None]
    assert len(heads) == 1 and heads[0] == HeadParser(side(name)).feed(data)  # type: ignore[arg-type]
    assert parser.rest == HEADS[name][1]


@pytest.mark.parametrize("name", [n for n in DATA_FILES if "e2c" in n])
def test_request_encoding_is_byte_identical(name: str) -> None:
    data = vector(name)
    head = HeadParser("request").feed(data)
    assert isinstance(head, ConnectRequest)
    assert encode_connect_request(head) == data[: HEADS[name][0]]


@pytest.mark.parametrize("name", ["quic-data-404-c2e.bin", "quic-data-refused-c2e.bin",
                                  "quic-data-tcp-c2e.bin"])
def test_deterministic_response_encoding_is_byte_identical(name: str) -> None:
    data = vector(name)
    head = HeadParser("response").feed(data)
    assert isinstance(head, ConnectResponse)
    assert encode_connect_response(head) == data[: HEADS[name][0]]


@pytest.mark.parametrize("name", ["quic-data-get-c2e.bin", "quic-data-post-c2e.bin",
                                  "quic-data-ws-c2e.bin"])
def test_order_only_responses_keep_layout(name: str) -> None:
    """Metadata order varies by run; re-encoding the decoded order gives the same bytes."""
    data = vector(name)
    head = HeadParser("response").feed(data)
    assert isinstance(head, ConnectResponse)
    assert encode_connect_response(head) == data[: HEADS[name][0]]


def test_get_request_fields() -> None:
    req = HeadParser("request").feed(vector("quic-data-get-e2c.bin"))
    assert req == ConnectRequest("http://probe.example/hello?x=1&y=two", ConnectionType.HTTP, [
        ("HttpMethod", "GET"), ("HttpHost", "probe.example"),
        ("HttpHeader:User-Agent", "vector-test/1.0"), ("HttpHeader:Accept", "application/json"),
        ("HttpHeader:X-Multi", "a"), ("HttpHeader:X-Multi", "b"),
        ("HttpHeader:Cf-Ray", "0123456789abcdef-PRB"),
        ("HttpHeader:Cf-Connecting-Ip", "203.0.113.9")])
    head = parse_http_request(req)
    assert (head.method, head.host, head.target, head.websocket) == (
        "GET", "probe.example", "/hello?x=1&y=two", False)


def test_response_fields() -> None:
    get = HeadParser("response").feed(vector("quic-data-get-c2e.bin"))
    assert isinstance(get, ConnectResponse) and get.error == ""
    status, headers = parse_http_response(get)
    assert status == 200 and sorted(headers) == sorted([
        ("X-Origin", "vector-origin"), ("Content-Length", "52"), ("Server", "VectorOrigin/1.0"),
        ("Date", "Thu, 01 Jan 2026 00:00:00 GMT"), ("Content-Type", "application/json")])
    ws = HeadParser("response").feed(vector("quic-data-ws-c2e.bin"))
    assert isinstance(ws, ConnectResponse)
    assert parse_http_response(ws)[0] == 101
    assert ("HttpHeader:Sec-Websocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") in ws.metadata
    refused = HeadParser("response").feed(vector("quic-data-refused-c2e.bin"))
    assert isinstance(refused, ConnectResponse) and refused.metadata == []
    assert refused.error.startswith("Unable to reach the origin service.")
    assert refused.error.endswith("dial tcp 127.0.0.1:28099: connect: connection refused")
    assert HeadParser("response").feed(vector("quic-data-tcp-c2e.bin")) == ConnectResponse("", [])
    tcp = HeadParser("request").feed(vector("quic-data-tcp-e2c.bin"))
    assert tcp == ConnectRequest("127.0.0.1:28081", ConnectionType.TCP, [("FlowID", "flow-1")])


def test_rpc_signature() -> None:
    data = vector("quic-rpc-update-configuration-e2c.bin")
    parser = HeadParser("request")
    assert parser.feed(data[:3]) is None
    assert parser.feed(data[3:10]) == RpcStreamStart()
    assert parser.rest == data[6:10]
    assert parser.feed(data[10:]) is None and parser.rest == data[6:]


@pytest.mark.parametrize(("side_", "data", "match"), [
    ("request", b"GET / HTTP/1.1\r\n", "signature"),
    ("request", b"\x0a\x36\xcd\x00", "signature"),
    ("response", RPC_SIGNATURE, "signature"),
    ("request", DATA_SIGNATURE + b"02", "version"),
    ("request", DATA_SIGNATURE + b"1", "version"),
    ("request", DATA_SIGNATURE + PROTOCOL_VERSION + b"\x00\x00\x00\x00\xff\xff\xff\x00", "large"),
    ("request", DATA_SIGNATURE + PROTOCOL_VERSION + bytes(8), "empty"),
])
def test_head_errors(side_: str, data: bytes, match: str) -> None:
    with pytest.raises(DecodeError, match=match):
        HeadParser(side_).feed(data)  # type: ignore[arg-type]


def test_unknown_connection_type() -> None:
    raw = bytearray(encode_connect_request(ConnectRequest("x", ConnectionType.TCP, [])))
    raw[16 + 8] = 9  # root data word: type
    with pytest.raises(DecodeError, match="connection type"):
        HeadParser("request").feed(bytes(raw))


def test_max_message_size() -> None:
    big = encode_connect_request(ConnectRequest("x" * 5000, ConnectionType.HTTP, []))
    with pytest.raises(DecodeError):
        HeadParser("request", max_message_size=1024).feed(big)
    assert HeadParser("request", max_message_size=8192).feed(big) is not None
