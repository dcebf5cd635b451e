"""A request body that drips in just inside the silence deadline is refused by its average
rate (408), on the HTTP/1.1 front and on the HTTPS front's HTTP/2 side. The edge's clock is
injected: the test moves it a minute on instead of waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nbtunnel.edge.limits import FrontLimits
from nbtunnel.edge.server import Edge, EdgeConfig
from nbtunnel.transport.quic import QuicStream
from tests.e2e.conftest import eventually
from tests.e2e.h2client import H2Client
from tests.e2e.hostile import Answer, hostile_connector
from tests.e2e.rawhttp import read_response
from tests.manual_clock import ManualClock

LIMITS = FrontLimits(min_body_rate=100, body_rate_grace=10)


@pytest.fixture
async def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def edge(tmp_path: Path, clock: ManualClock) -> AsyncIterator[Edge]:
    async with Edge(EdgeConfig(state_dir=tmp_path / "edge", quic_port=0, http_port=0,
                               https_port=0, front=LIMITS, clock=clock)) as e:
        yield e


def _head_seen() -> tuple[asyncio.Event, Answer]:
    seen = asyncio.Event()

    async def answer(stream: QuicStream) -> None:
        seen.set()  # the edge sent the request head: it now waits for body bytes

    return seen, answer


async def test_dripping_body_gets_408_on_http1(edge: Edge, clock: ManualClock) -> None:
    seen, answer = _head_seen()
    async with hostile_connector(edge, answer) as evil:
        reader, writer = await asyncio.open_connection(*edge.public_address)
        try:
            writer.write(f"POST /upload HTTP/1.1\r\nHost: {evil.hostname}\r\n"
                         "Content-Length: 1000\r\n\r\n".encode())
            await asyncio.wait_for(seen.wait(), 10)
            clock.advance(60)  # a minute of waiting for the body: one byte arrives
            writer.write(b"x")
            async with asyncio.timeout(10):
                resp = await read_response(reader)
            assert resp.status == 408 and b"too slow" in resp.body
            assert b"1 bytes in 60 s" in resp.body
            await eventually(lambda: evil.resets == [0])  # the origin request is released
        finally:
            writer.close()


async def test_dripping_body_gets_408_on_http2(edge: Edge, clock: ManualClock) -> None:
    seen, answer = _head_seen()
    async with hostile_connector(edge, answer) as evil:
        client = await H2Client.open(edge)
        try:
            sid = client.get(evil.hostname, "/upload", method="POST",
                             extra=[("content-length", "1000")], end=False)
            await asyncio.wait_for(seen.wait(), 10)
            clock.advance(60)
            client.send_body(sid, b"x")
            resp = await client.response(sid)
            assert resp.status == 408 and b"too slow" in resp.body
            await eventually(lambda: evil.resets == [0])
        finally:
            client.close()
