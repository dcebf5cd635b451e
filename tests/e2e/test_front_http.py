"""The public front as an HTTP/1.1 server: pipelining, trailers, Connection, Host and the
headers a visitor may not set (issue 9 findings 3 and 8), on raw sockets through a real
connector to a real origin."""

from __future__ import annotations

import asyncio

from tests.e2e.conftest import Tunnel
from tests.e2e.rawhttp import read_response, roundtrip, wait_closed


def _origin_headers(body: dict[str, object]) -> list[tuple[str, str]]:
    return [(str(n), str(v)) for n, v in body["headers"]]  # type: ignore[union-attr]


def _get(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for n, v in headers if n.lower() == name.lower()]


async def test_pipelined_requests_keep_their_own_method_and_body(tunnel: Tunnel) -> None:
    h = tunnel.hostname
    data = (f"POST /echo/m1 HTTP/1.1\r\nHost: {h}\r\nContent-Length: 5\r\n\r\nhello"
            f"DELETE /echo/m2 HTTP/1.1\r\nHost: {h}\r\n\r\n").encode()
    (first, second), _ = await roundtrip(tunnel.edge.public_address, data, ["POST", "DELETE"])
    assert (first.json()["method"], first.json()["path"], first.json()["body"]) == (
        "POST", "/echo/m1", "hello")
    assert (second.json()["method"], second.json()["path"], second.json()["body"]) == (
        "DELETE", "/echo/m2", "")


async def test_head_then_get_pipelined_head_gets_no_body(tunnel: Tunnel) -> None:
    h = tunnel.hostname
    data = (f"HEAD /echo/h HTTP/1.1\r\nHost: {h}\r\n\r\n"
            f"GET /echo/g HTTP/1.1\r\nHost: {h}\r\n\r\n").encode()
    (head, get), _ = await roundtrip(tunnel.edge.public_address, data, ["HEAD", "GET"])
    assert head.status == 200 and head.body == b""
    assert get.json()["method"] == "GET" and get.json()["path"] == "/echo/g"


async def test_http11_then_http10_both_answered(tunnel: Tunnel) -> None:
    h = tunnel.hostname
    data = (f"GET /echo/one HTTP/1.1\r\nHost: {h}\r\n\r\n"
            f"GET /echo/two HTTP/1.0\r\nHost: {h}\r\n\r\n").encode()
    (one, two), closed = await roundtrip(tunnel.edge.public_address, data, ["GET", "GET"])
    assert one.json()["path"] == "/echo/one" and two.json()["path"] == "/echo/two"
    assert closed  # HTTP/1.0 without keep-alive: the edge closes after the second


async def test_chunked_trailers_never_become_request_headers(tunnel: Tunnel) -> None:
    h = tunnel.hostname
    data = (f"POST /echo/t HTTP/1.1\r\nHost: {h}\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n0\r\nAuthorization: Bearer injected\r\nX-Trailer: 1\r\n\r\n").encode()
    (resp,), _ = await roundtrip(tunnel.edge.public_address, data, ["POST"])
    body = resp.json()
    assert body["body"] == "hello"
    seen = _origin_headers(body)
    assert not _get(seen, "Authorization") and not _get(seen, "X-Trailer")


async def test_connection_close_from_the_client_is_honoured(tunnel: Tunnel) -> None:
    reader, writer = await asyncio.open_connection(*tunnel.edge.public_address)
    try:
        writer.write(f"GET /echo/c HTTP/1.1\r\nHost: {tunnel.hostname}\r\n"
                     "Connection: close\r\n\r\n".encode())
        resp = await read_response(reader)
        assert resp.status == 200 and resp.header("Connection") == "close"
        assert await wait_closed(reader, 10)  # not the 75 s keep-alive timeout
    finally:
        writer.close()


async def test_ten_thousand_small_headers_get_431(tunnel: Tunnel) -> None:
    fields = "a:b\r\n" * 10_000  # 50 KB: under the head size limit, over the metadata one
    data = f"GET /echo/ HTTP/1.1\r\nHost: {tunnel.hostname}\r\n{fields}\r\n".encode()
    (resp,), closed = await roundtrip(tunnel.edge.public_address, data, ["GET"])
    assert resp.status == 431 and closed


async def test_host_rules(tunnel: Tunnel) -> None:
    address = tunnel.edge.public_address
    (none,), _ = await roundtrip(address, b"GET /echo/ HTTP/1.1\r\n\r\n", ["GET"])
    assert none.status == 400 and b"Host" in none.body
    two = f"GET /echo/ HTTP/1.1\r\nHost: {tunnel.hostname}\r\nHost: other.localhost\r\n\r\n"
    (resp,), closed = await roundtrip(address, two.encode(), ["GET"])
    assert resp.status == 400 and closed


async def test_absolute_form_is_routed_by_its_authority(tunnel: Tunnel) -> None:
    data = (f"GET http://{tunnel.hostname}/echo/abs?q=1 HTTP/1.1\r\n"
            "Host: nowhere.localhost\r\n\r\n").encode()
    (resp,), _ = await roundtrip(tunnel.edge.public_address, data, ["GET"])
    assert resp.status == 200
    body = resp.json()
    assert (body["path"], body["query"]) == ("/echo/abs", "q=1")
    assert _get(_origin_headers(body), "Host") == [tunnel.hostname]


async def test_hop_by_hop_by_nomination_reserved_and_forwarded_for(tunnel: Tunnel) -> None:
    data = (f"GET /echo/h HTTP/1.1\r\nHost: {tunnel.hostname}\r\n"
            "Connection: keep-alive, X-Secret\r\nX-Secret: s3cr3t\r\n"
            "X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2, 10.0.0.3\r\n"
            "Cf-Ipcountry: XX\r\nCf-Connecting-Ipv6: ::2\r\nTrue-Client-Ip: 6.6.6.6\r\n"
            "Cf_Connecting_Ip: 6.6.6.6\r\nCf-Connecting-Ip: 6.6.6.6\r\nX-Kept: yes\r\n\r\n"
            ).encode()
    (resp,), _ = await roundtrip(tunnel.edge.public_address, data, ["GET"])
    seen = _origin_headers(resp.json())
    assert not _get(seen, "X-Secret")
    assert _get(seen, "X-Forwarded-For") == ["10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"]
    for name in ("Cf-Ipcountry", "Cf-Connecting-Ipv6", "True-Client-Ip", "Cf_Connecting_Ip"):
        assert not _get(seen, name), name
    assert _get(seen, "Cf-Connecting-Ip") == ["127.0.0.1"]
    assert _get(seen, "X-Kept") == ["yes"]


async def test_latin1_header_bytes_reach_the_origin_unchanged(tunnel: Tunnel) -> None:
    data = (f"GET /echo/l HTTP/1.1\r\nHost: {tunnel.hostname}\r\n".encode()
            + b"X-Latin: caf\xe9 \xa3\r\nX-Utf8: caf\xc3\xa9\r\n\r\n")
    (resp,), _ = await roundtrip(tunnel.edge.public_address, data, ["GET"])
    seen = _origin_headers(resp.json())
    # the origin (aiohttp) decodes field bytes as UTF-8 with surrogate escapes
    assert [v.encode("utf-8", "surrogateescape") for v in _get(seen, "X-Latin")] == [
        b"caf\xe9 \xa3"]
    assert _get(seen, "X-Utf8") == ["caf\u00e9"]
