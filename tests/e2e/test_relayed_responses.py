"""Response heads from a hostile connector are checked before a visitor sees them (issue 9
finding 6), and a connector that never answers gets the visitor a 524 (finding 5)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nbtunnel.edge.limits import FrontLimits
from nbtunnel.edge.server import Edge, EdgeConfig
from tests.e2e.conftest import eventually
from tests.e2e.hostile import BAD_HEADS, answer_with, head, hostile_connector, never_answer
from tests.e2e.rawhttp import roundtrip


@pytest.fixture
async def short_edge(tmp_path: Path) -> AsyncIterator[Edge]:
    limits = FrontLimits(response_timeout=1.0)
    async with Edge(EdgeConfig(state_dir=tmp_path / "edge", quic_port=0, http_port=0,
                               front=limits)) as e:
        yield e


def _get(hostname: str, path: str = "/", extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {hostname}\r\n{extra}\r\n".encode()


@pytest.mark.parametrize("case", list(BAD_HEADS))
async def test_bad_response_head_gets_502_and_nothing_of_it(short_edge: Edge, case: str) -> None:
    async with hostile_connector(short_edge, answer_with(BAD_HEADS[case] + b"body")) as evil:
        (resp,), _ = await roundtrip(short_edge.public_address, _get(evil.hostname), ["GET"])
    assert resp.status == 502, case
    assert b"origin" in resp.body or b"101 Switching Protocols" in resp.body
    assert b"injected" not in resp.raw_head and b"X-A" not in resp.raw_head


async def test_body_past_content_length_never_reaches_a_kept_alive_client(
    short_edge: Edge
) -> None:
    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
    answer = answer_with(head(200, [("Content-Length", "5")]) + b"hello" + smuggled)
    async with hostile_connector(short_edge, answer) as evil:
        data = _get(evil.hostname, "/a") + _get(evil.hostname, "/b")
        (first,), closed = await roundtrip(short_edge.public_address, data, ["GET"])
    assert first.status == 200 and first.body == b"hello"
    assert closed  # the edge cut the body and closed; the visitor never parses "smuggled"


async def test_duplicate_equal_content_length_is_one(short_edge: Edge) -> None:
    answer = answer_with(head(200, [("Content-Length", "5"), ("Content-Length", "5")]) + b"hello")
    async with hostile_connector(short_edge, answer) as evil:
        (resp,), _ = await roundtrip(short_edge.public_address, _get(evil.hostname), ["GET"])
    assert resp.status == 200 and resp.body == b"hello"
    assert [n for n, _ in resp.headers if n.lower() == "content-length"] == ["Content-Length"]


async def test_silent_connector_gets_524_and_the_stream_reset(short_edge: Edge) -> None:
    async with hostile_connector(short_edge, never_answer) as evil:
        (resp,), _ = await roundtrip(short_edge.public_address, _get(evil.hostname), ["GET"])
        assert resp.status == 524
        assert b"did not answer within 1 seconds" in resp.body
        await eventually(lambda: evil.resets == [0])  # the connector is told to give up
