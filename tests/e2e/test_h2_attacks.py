"""HTTP/2 attacks any client of the HTTPS front can make without credentials: the offender's
stream or connection is refused, the connectors are not put to work, and everyone else is
served (CVE-2023-44487 rapid reset, CONTINUATION and control-frame floods, slow readers)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nbtunnel.edge.h2front import MAX_STREAMS
from nbtunnel.edge.h2guard import BUDGET
from nbtunnel.edge.limits import FrontLimits
from nbtunnel.edge.server import Edge
from nbtunnel.transport.errors import TransportError
from nbtunnel.transport.quic import QuicStream
from tests.e2e.conftest import eventually
from tests.e2e.h2client import (
    CONTINUATION,
    PING,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    H2Client,
    RawH2,
    frame,
    goaway_code,
    https_edge,
    resets,
)
from tests.e2e.hostile import Hostile, answer_with, head, hostile_connector

ENHANCE_YOUR_CALM, FLOW_CONTROL_ERROR, REFUSED_STREAM, CANCEL = 11, 3, 7, 8


@pytest.fixture
async def edge(tmp_path: Path) -> AsyncIterator[Edge]:
    async with https_edge(tmp_path, FrontLimits(head_timeout=1.0, send_timeout=1.0)) as e:
        yield e


@pytest.fixture
async def evil(edge: Edge) -> AsyncIterator[Hostile]:
    """A connector answering 200 "ok" to everything (the offender's target)."""
    async with hostile_connector(edge, answer_with(
            head(200, [("Content-Length", "2")]) + b"ok")) as hostile:
        yield hostile


async def _still_served(edge: Edge, hostname: str) -> None:
    client = await H2Client.open(edge)
    try:
        resp = await client.response(client.get(hostname))
        assert (resp.status, resp.body) == (200, b"ok")
    finally:
        client.close()


async def test_rapid_reset_gets_goaway_and_puts_no_connector_to_work(
    edge: Edge, evil: Hostile
) -> None:
    raw = await RawH2.open(edge)
    cancel = struct.pack(">I", CANCEL)
    try:
        raw.writer.write(b"".join(raw.headers(sid, evil.hostname) + frame(RST_STREAM, 0, sid,
                                                                          cancel)
                                  for sid in range(1, 6000, 2)))  # 3000 streams
        await raw.read_until(lambda f: goaway_code(bytes(raw.received)) is not None)
    finally:
        raw.close()
    assert goaway_code(bytes(raw.received)) == ENHANCE_YOUR_CALM
    assert evil.opened < BUDGET  # a reset stream's task is cancelled, most before they ran
    await _still_served(edge, evil.hostname)


async def test_streams_over_the_cap_are_refused_not_the_connection(edge: Edge) -> None:
    """A client past our MAX_CONCURRENT_STREAMS gets REFUSED_STREAM for the extra streams
    (h2 alone ended the whole connection, the 128 streams in flight with it)."""
    async def hold(stream: QuicStream) -> None:
        await asyncio.Event().wait()

    async with hostile_connector(edge, hold) as holder:
        raw = await RawH2.open(edge)
        extra = 40
        try:
            raw.writer.write(b"".join(raw.headers(sid, holder.hostname)
                                      for sid in range(1, 2 * (MAX_STREAMS + extra), 2)))
            await raw.read_until(lambda f: len(resets(bytes(raw.received), REFUSED_STREAM))
                                 >= extra)
            await eventually(lambda: holder.opened == MAX_STREAMS)
        finally:
            raw.close()
        assert len(resets(bytes(raw.received), REFUSED_STREAM)) == extra
        assert holder.opened == MAX_STREAMS


async def test_continuation_flood_gets_goaway(edge: Edge, evil: Hostile) -> None:
    raw = await RawH2.open(edge)
    try:
        block = raw.headers(1, evil.hostname, end_headers=False)
        raw.writer.write(block + b"".join(frame(CONTINUATION, 0, 1, b"\0" * 16384)
                                          for _ in range(10)))
        await raw.read_until(lambda f: goaway_code(bytes(raw.received)) is not None)
    finally:
        raw.close()
    assert goaway_code(bytes(raw.received)) == ENHANCE_YOUR_CALM
    assert evil.opened == 0
    await _still_served(edge, evil.hostname)


async def test_unfinished_header_block_is_closed_at_the_head_deadline(
    edge: Edge, evil: Hostile
) -> None:
    raw = await RawH2.open(edge)
    try:
        raw.writer.write(raw.headers(1, evil.hostname, end_headers=False))
        closed = not await raw.read_until(lambda f: False, timeout=10)
    finally:
        raw.close()
    assert closed and goaway_code(bytes(raw.received)) == ENHANCE_YOUR_CALM


@pytest.mark.parametrize("flood", ["PING", "SETTINGS", "empty CONTINUATION-free PRIORITY"])
async def test_control_frame_flood_gets_goaway(edge: Edge, evil: Hostile, flood: str) -> None:
    one = {"PING": frame(PING, 0, 0, b"12345678"), "SETTINGS": frame(SETTINGS, 0, 0),
           "empty CONTINUATION-free PRIORITY": frame(2, 0, 1, b"\0\0\0\0\x10")}[flood]
    raw = await RawH2.open(edge)
    try:
        raw.writer.write(one * int(BUDGET * 3))
        await raw.read_until(lambda f: goaway_code(bytes(raw.received)) is not None)
    finally:
        raw.close()
    assert goaway_code(bytes(raw.received)) == ENHANCE_YOUR_CALM
    await _still_served(edge, evil.hostname)


async def test_window_overflow_is_a_flow_control_error(edge: Edge, evil: Hostile) -> None:
    raw = await RawH2.open(edge)
    try:
        raw.writer.write(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF)) * 2)
        await raw.read_until(lambda f: goaway_code(bytes(raw.received)) is not None)
    finally:
        raw.close()
    assert goaway_code(bytes(raw.received)) == FLOW_CONTROL_ERROR
    await _still_served(edge, evil.hostname)


async def test_slow_reader_is_reset_at_the_send_deadline(edge: Edge) -> None:
    """A client that never opens its window holds a stream, and the connector's origin
    request, only until the send deadline."""
    stopped = asyncio.Event()

    async def endless(stream: QuicStream) -> None:
        await stream.write(head(200, [("Content-Length", str(1 << 40))]))
        try:
            while True:
                await stream.write(b"x" * 16384)
        except TransportError:
            stopped.set()  # the edge stopped the stream: the origin request ends
            raise

    async with hostile_connector(edge, endless) as big:
        client = await H2Client.open(edge, window=0)
        try:
            sid = client.get(big.hostname)
            resp = await client.response(sid)
        finally:
            client.close()
        assert resp.status == 200 and resp.reset == CANCEL
        await asyncio.wait_for(stopped.wait(), 10)


async def test_too_many_fields_get_431(edge: Edge, evil: Hostile) -> None:
    client = await H2Client.open(edge)
    try:
        resp = await client.response(client.get(
            evil.hostname, extra=[(f"x-f{i}", "1") for i in range(300)]))
    finally:
        client.close()
    assert resp.status == 431 and evil.opened == 0


async def test_a_head_over_64_kib_gets_431_not_a_connection_error(
    edge: Edge, evil: Hostile
) -> None:
    """As on HTTP/1.1: the decoded limit (128 KiB) is above the front's 64 KiB head limit, so
    a big cookie is answered, not a GOAWAY."""
    client = await H2Client.open(edge)
    try:
        resp = await client.response(client.get(evil.hostname, extra=[("cookie", "c" * 90000)]))
        again = await client.response(client.get(evil.hostname))
    finally:
        client.close()
    assert resp.status == 431 and evil.opened == 1 and again.status == 200
