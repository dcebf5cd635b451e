"""The built-in hello world origin, exercised with a plain aiohttp client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from nbtunnel.connector.hello import HelloWorldServer, format_go_duration, parse_go_duration


@pytest.fixture
async def hello() -> AsyncIterator[HelloWorldServer]:
    server = HelloWorldServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_index_shows_the_request(
    hello: HelloWorldServer, http: aiohttp.ClientSession
) -> None:
    headers = {"Cf-Connecting-IP": "203.0.113.9", "X-Forwarded-For": "203.0.113.9",
               "Cf-Ray": "0123456789abcdef-PRB", "X-Evil": "<script>"}
    async with http.get(f"{hello.url}/?a=1", headers=headers) as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        page = await resp.text()
    assert "nbtunnel hello world" in page
    assert "<b>GET</b> <code>/?a=1</code>" in page
    for value in ("203.0.113.9", "0123456789abcdef-PRB", "Cf-Connecting-IP: <code>"):
        assert value in page
    assert "&lt;script&gt;" in page and "<script>" not in page
    for link in ('href="/uptime"', 'href="/_health"', 'href="/sse?freq=1s"', "/ws"):
        assert link in page


async def test_uptime_and_health(hello: HelloWorldServer, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{hello.url}/uptime") as resp:
        info = await resp.json()
    assert set(info) == {"startTime", "uptime"}
    assert info["startTime"].endswith("Z") and parse_go_duration(info["uptime"]) < 60
    async with http.get(f"{hello.url}/_health") as resp:
        assert (resp.status, await resp.text()) == (200, "ok")


async def test_sse_ticks_at_the_requested_period(
    hello: HelloWorldServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{hello.url}/sse?freq=20ms") as resp:
        assert resp.content_type == "text/event-stream"
        events: list[bytes] = []
        async with asyncio.timeout(5):
            while len(events) < 3:
                events.append(await resp.content.readuntil(b"\n\n"))
    assert [e.split(b"\n")[0] for e in events] == [b"id: 0", b"id: 1", b"id: 2"]
    async with http.get(f"{hello.url}/sse?freq=soon") as resp:
        assert resp.status == 400


async def test_ws_echoes_text_and_binary(
    hello: HelloWorldServer, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{hello.url}/ws") as ws:
        await ws.send_str("héllo")
        assert await ws.receive_str(timeout=5) == "héllo"
        await ws.send_bytes(b"\x00\x01\x02")
        assert await ws.receive_bytes(timeout=5) == b"\x00\x01\x02"


async def test_stop_ends_open_streams_and_leaves_no_task(http: aiohttp.ClientSession) -> None:
    before = asyncio.all_tasks()
    server = HelloWorldServer()
    await server.start()
    ws = await http.ws_connect(f"{server.url}/ws")
    sse = await http.get(f"{server.url}/sse?freq=1h")
    await sse.content.readuntil(b"\n\n")
    async with asyncio.timeout(3):  # far below the runner's 5 s backstop
        await server.stop()
        assert (await ws.receive()).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert await sse.content.read() == b""
    await ws.close()
    sse.release()
    assert asyncio.all_tasks() == before
    with pytest.raises(RuntimeError):
        _ = server.url


@pytest.mark.parametrize(("text", "seconds"), [
    ("1s", 1.0), ("500ms", 0.5), ("1m30s", 90.0), ("1.5h", 5400.0), ("250us", 0.00025),
])
def test_parse_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "s", "1x", "1s garbage"])
def test_parse_go_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.25, "250ms"), (1.5, "1.5s"), (62, "1m2s"), (3723.5, "1h2m3.5s"),
    (0.000002, "2µs"),
])
def test_format_go_duration(seconds: float, text: str) -> None:
    assert format_go_duration(seconds) == text
