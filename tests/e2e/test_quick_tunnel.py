"""Through a real edge and connector (QUIC on loopback) to a real origin."""

from __future__ import annotations

import asyncio
import hashlib
import os

import aiohttp
import pytest

from tests.e2e.conftest import Origin, Tunnel, download_sha256, eventually, held_requests

MB = 1024 * 1024


def _headers(t: Tunnel, **extra: str) -> dict[str, str]:
    return {"Host": t.hostname, **extra}


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "DELETE"])
async def test_methods_headers_and_query_preserved(
    tunnel: Tunnel, client: aiohttp.ClientSession, method: str
) -> None:
    body = b"payload-" + method.encode() if method in ("POST", "PUT") else None
    async with client.request(
        method, f"{tunnel.base}/echo/a%20b?x=1&y=two", data=body,
        headers=_headers(tunnel, **{"X-Test": "yes", "Accept": "application/json"}),
    ) as resp:
        assert resp.status == 200
        assert resp.headers["X-Origin"] == "test"
        assert "Cf-Ray" in resp.headers
        if method == "HEAD":
            assert await resp.read() == b""
            return
        doc = await resp.json()
    assert doc["method"] == method
    assert doc["path"] == "/echo/a b"
    assert doc["query"] == "x=1&y=two"
    got = {k.lower(): v for k, v in doc["headers"]}
    assert got["x-test"] == "yes"
    assert got["host"] == tunnel.hostname
    assert got["cf-connecting-ip"] == "127.0.0.1"
    assert got["x-forwarded-for"] == "127.0.0.1"
    assert got["x-forwarded-proto"] == "http"
    assert got["cf-ray"].endswith("-LOC")
    assert "cf-warp-tag-id" in got
    assert doc["body"] == (body.decode() if body else "")


async def test_large_download_and_upload_match(
    tunnel: Tunnel, client: aiohttp.ClientSession, origin: Origin
) -> None:
    size = 50 * MB
    h = hashlib.sha256()
    async with client.get(f"{tunnel.base}/download/{size}", headers=_headers(tunnel)) as resp:
        assert resp.status == 200
        async for chunk in resp.content.iter_chunked(256 * 1024):
            h.update(chunk)
    assert h.hexdigest() == download_sha256(size)

    block = os.urandom(MB)
    expect = hashlib.sha256(block * 50).hexdigest()

    async def gen():  # type: ignore[no-untyped-def]
        for _ in range(50):
            yield block

    async with client.post(f"{tunnel.base}/upload", data=gen(),
                           headers=_headers(tunnel)) as resp:
        assert resp.status == 200
        doc = await resp.json()
    assert doc == {"sha256": expect, "bytes": 50 * MB}


async def test_200_concurrent_requests(tunnel: Tunnel, client: aiohttp.ClientSession) -> None:
    async def one(i: int) -> None:
        async with client.get(f"{tunnel.base}/echo/{i}?n={i}",
                              headers=_headers(tunnel)) as resp:
            assert resp.status == 200
            doc = await resp.json()
            assert doc["path"] == f"/echo/{i}" and doc["query"] == f"n={i}"

    await asyncio.gather(*(one(i) for i in range(200)))
    served = [c.served for c in tunnel.edge.registry.connections()]
    assert sum(1 for n in served if n > 0) == 4, served  # under load: spread over every one


async def test_requests_in_flight_spread_and_sequential_ones_reuse_one_connection(
    tunnel: Tunnel, client: aiohttp.ClientSession
) -> None:
    conns = tunnel.edge.registry.connections(tunnel.quick.credentials.tunnel_id)
    assert len(conns) == 4
    async with held_requests(tunnel.edge.public_address, tunnel.hostname, 8):
        assert [c.in_flight for c in conns] == [2, 2, 2, 2]  # the least busy one each time
    await eventually(lambda: not any(c.in_flight for c in conns))  # the holds were aborted
    before = [c.served for c in conns]
    for i in range(10):  # concurrency 1: one warm connection, not a round-robin over idle ones
        async with client.get(f"{tunnel.base}/echo/{i}", headers=_headers(tunnel)) as resp:
            assert resp.status == 200
    added = sorted(after - b for after, b in zip((c.served for c in conns), before, strict=True))
    assert added == [0, 0, 0, 10], added


async def test_sse_first_event_arrives_while_origin_still_producing(
    tunnel: Tunnel, client: aiohttp.ClientSession, origin: Origin
) -> None:
    async with client.get(f"{tunnel.base}/sse", headers=_headers(tunnel)) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 10)
        assert first == b"data: first\n\n"
        assert not origin.sse_release.is_set()  # the origin is still blocked mid-response
        origin.sse_release.set()
        rest = await resp.content.read()
    assert rest == b"data: second\n\n"


async def test_websocket_echo_1000_messages(
    tunnel: Tunnel, client: aiohttp.ClientSession
) -> None:
    async with client.ws_connect(f"{tunnel.base}/ws", headers=_headers(tunnel)) as ws:
        for i in range(1000):
            if i % 2:
                await ws.send_bytes(b"bin-%d" % i)
                assert (await ws.receive_bytes(timeout=10)) == b"bin-%d" % i
            else:
                await ws.send_str(f"msg-{i}")
                assert (await ws.receive_str(timeout=10)) == f"msg-{i}"


async def test_four_connections_and_killing_one_loses_nothing(
    tunnel: Tunnel, client: aiohttp.ClientSession
) -> None:
    conns = tunnel.edge.registry.connections()
    assert sorted(c.conn_index for c in conns) == [0, 1, 2, 3]
    assert len({c.connector_id for c in conns}) == 1
    victim = conns[1]
    victim.transport.close(0, "test kills one connection")
    for i in range(40):
        async with client.get(f"{tunnel.base}/echo/after/{i}",
                              headers=_headers(tunnel)) as resp:
            assert resp.status == 200, await resp.text()
    # and the connector reconnects that index by itself
    await asyncio.wait_for(tunnel.connector.wait_ready(4), 20)


@pytest.mark.skipif(__import__("shutil").which("curl") is None, reason="needs curl")
async def test_curl_upload_with_expect_100_continue(tunnel: Tunnel, tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(3 * MB)
    path = tmp_path / "up.bin"
    path.write_bytes(data)
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--max-time", "20", "-H", f"Host: {tunnel.hostname}",
        "--data-binary", f"@{path}", f"{tunnel.base}/upload",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    assert b'"sha256": "%s"' % hashlib.sha256(data).hexdigest().encode() in out
