"""The HTTPS front's HTTP/2 side checks every response head a connector sends, as the
HTTP/1.1 front does, and answers 524 when the connector never does (issue 9 findings 5, 6)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nbtunnel.edge.limits import FrontLimits
from nbtunnel.edge.server import Edge
from tests.e2e.conftest import eventually
from tests.e2e.h2client import H2Client, https_edge
from tests.e2e.hostile import BAD_HEADS, Hostile, answer_with, head, hostile_connector, never_answer


@pytest.fixture
async def h2_edge(tmp_path: Path) -> AsyncIterator[Edge]:
    async with https_edge(tmp_path, FrontLimits(response_timeout=1.0, body_timeout=1.0)) as e:
        yield e


@pytest.fixture
async def h2(h2_edge: Edge) -> AsyncIterator[H2Client]:
    """An HTTP/2 client of the HTTPS front."""
    c = await H2Client.open(h2_edge)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
async def silent(h2_edge: Edge) -> AsyncIterator[Hostile]:
    """A connector that reads each request head and never answers."""
    async with hostile_connector(h2_edge, never_answer) as evil:
        yield evil


@pytest.mark.parametrize("case", list(BAD_HEADS))
async def test_bad_response_head_gets_502_over_http2(
    h2_edge: Edge, h2: H2Client, case: str
) -> None:
    async with hostile_connector(h2_edge, answer_with(BAD_HEADS[case] + b"body")) as evil:
        resp = await h2.response(h2.get(evil.hostname))
    assert resp.status == 502, (case, resp)
    assert resp.ended and (b"origin" in resp.body or b"101 Switching Protocols" in resp.body)
    names = [n for n, _ in resp.headers]
    assert b"x-a" not in names and b"set-cookie" not in names and b"bad name" not in names


async def test_connection_specific_headers_are_stripped(h2_edge: Edge, h2: H2Client) -> None:
    """Fields illegal in HTTP/2 (RFC 9113 8.2.2) and those Connection nominates are dropped;
    the response itself is relayed."""
    answer = answer_with(head(200, [
        ("Connection", "keep-alive, X-Hop"), ("Keep-Alive", "timeout=5"), ("X-Hop", "1"),
        ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"), ("Proxy-Connection", "x"),
        ("TE", "trailers"), ("Content-Length", "5"), ("Content-Length", "5"),
        ("X-Kept", "yes")]) + b"hello")
    async with hostile_connector(h2_edge, answer) as evil:
        resp = await h2.response(h2.get(evil.hostname))
    assert resp.status == 200 and resp.body == b"hello" and resp.ended
    names = [n for n, _ in resp.headers]
    for gone in (b"connection", b"keep-alive", b"x-hop", b"transfer-encoding", b"upgrade",
                 b"proxy-connection", b"te"):
        assert gone not in names
    assert resp.header(b"x-kept") == b"yes"
    assert names.count(b"content-length") == 1


async def test_body_past_content_length_is_cut(h2_edge: Edge, h2: H2Client) -> None:
    answer = answer_with(head(200, [("Content-Length", "5")]) + b"hello, and more")
    async with hostile_connector(h2_edge, answer) as evil:
        resp = await h2.response(h2.get(evil.hostname))
        assert resp.body == b"hello"
        second = await h2.response(h2.get(evil.hostname, "/again"))
    assert second.status == 200  # the connection itself is fine


async def test_silent_connector_gets_524_over_http2(silent: Hostile, h2: H2Client) -> None:
    resp = await h2.response(h2.get(silent.hostname))
    assert resp.status == 524 and resp.ended
    assert b"did not answer within 1 seconds" in resp.body
    await eventually(lambda: silent.resets == [0])  # the connector is told to give up


async def test_other_clients_are_served_meanwhile(silent: Hostile, h2: H2Client) -> None:
    hung = h2.get(silent.hostname)
    other = await h2.response(h2.get("nobody.localhost"))
    assert other.status == 404
    assert (await h2.response(hung)).status == 524


async def test_stalled_request_body_gets_408_over_http2(
    silent: Hostile, h2: H2Client
) -> None:
    sid = h2.get(silent.hostname, "/upload", method="POST",
                     extra=[("content-length", "1000")], end=False)
    h2.send_body(sid, b"0123456789")
    resp = await h2.response(sid)
    assert resp.status == 408 and b"stalled" in resp.body
    await eventually(lambda: silent.resets == [0])  # the origin request is released
