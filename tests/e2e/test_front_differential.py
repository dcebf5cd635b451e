"""Differential: for each corpus input sent to the public front, the requests the origin
receives (method, target, headers, body) are the ones h11 parses from the same bytes, and
where h11 rejects the input the front refuses it too (after answering what came before)."""

from __future__ import annotations

import asyncio

import pytest

from nbtunnel.core.http1 import HOP_BY_HOP
from tests.e2e.conftest import Tunnel
from tests.e2e.rawhttp import read_response, wait_closed
from tests.edge.front_corpus import CORPUS, STRICTER_THAN_H11
from tests.edge.test_request_reader import Seen, with_h11

# fields the tunnel owns or re-frames, so the origin sees them changed by design
_CHANGED = HOP_BY_HOP | {"host", "content-length", "x-forwarded-for", "x-forwarded-proto",
                         "cf-connecting-ip", "cf-ray", "cf-visitor", "cf-warp-tag-id",
                         "accept-encoding"}


def _expected_fields(seen: Seen) -> list[tuple[str, str]]:
    return [(n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in seen.headers
            if n.decode("latin-1").lower() not in _CHANGED]


@pytest.mark.parametrize("name", list(CORPUS))
async def test_origin_receives_what_h11_parses(tunnel: Tunnel, name: str) -> None:
    data = CORPUS[name].replace("{h}", tunnel.hostname).encode("latin-1")
    expected, rejected = with_h11(data)
    reader, writer = await asyncio.open_connection(*tunnel.edge.public_address)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(20):
            for seen in expected:
                resp = await read_response(reader, seen.method)
                if seen.method == "HEAD":
                    assert resp.status == 200
                    continue
                got = resp.json()
                assert (got["method"], got["raw_path"]) == (seen.method, seen.target)
                assert got["body"].encode("latin-1") == seen.body
                fields = [(str(n).lower(), str(v)) for n, v in got["headers"]]
                mine = [f for f in fields if f[0] not in _CHANGED]
                for field in _expected_fields(seen):
                    assert field in mine, (field, mine)
            if rejected:
                refusal = await read_response(reader)
                assert refusal.status in (400, 431), refusal
        if rejected:
            assert await wait_closed(reader, 5)
    finally:
        writer.close()


@pytest.mark.parametrize("name", list(STRICTER_THAN_H11))
async def test_documented_stricter_cases_are_refused(tunnel: Tunnel, name: str) -> None:
    data = STRICTER_THAN_H11[name].replace("{h}", tunnel.hostname).encode("latin-1")
    reader, writer = await asyncio.open_connection(*tunnel.edge.public_address)
    try:
        writer.write(data)
        async with asyncio.timeout(20):
            resp = await read_response(reader)
        assert resp.status in (400, 405)
        assert await wait_closed(reader, 5)
    finally:
        writer.close()
