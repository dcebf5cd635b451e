"""The `/api/v1` control plane: every endpoint, account isolation, refusals, persistence."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import aiohttp

from nbtunnel.core.credentials import Credentials
from nbtunnel.edge.openapi import ENDPOINTS
from nbtunnel.edge.server import Edge
from tests.control.conftest import Api, edge_config


async def test_every_endpoint(api: Api) -> None:
    assert (await api.ok("GET", "/account"))["name"] == "default"
    created = await api.ok("POST", "/tunnels", {"name": "web"})
    tid = created["id"]
    creds = Credentials.from_token(created["token"])
    assert str(creds.tunnel_id) == tid and len(creds.secret) == 32
    assert created["credentials_file"]["TunnelID"] == tid
    assert [t["id"] for t in await api.ok("GET", "/tunnels")] == [tid]
    assert await api.ok("GET", "/tunnels", query={"name": "nope"}) == []
    info = await api.ok("GET", f"/tunnels/{tid}")
    assert info["connections"] == [] and info["status"] == "inactive"
    assert (await api.ok("GET", "/tunnels/web"))["id"] == tid  # by name too
    assert (await api.ok("GET", f"/tunnels/{tid}/token"))["token"] == created["token"]
    route = await api.ok("POST", "/routes", {"hostname": "App.Example.com", "tunnel_id": tid})
    assert route["hostname"] == "app.example.com"
    assert [r["hostname"] for r in await api.ok("GET", "/routes")] == ["app.example.com"]
    cfg = {"ingress": [{"hostname": "app.example.com", "service": "http://127.0.0.1:1"},
                       {"service": "http_status:404"}]}
    put = await api.ok("PUT", f"/tunnels/{tid}/configurations", {"config": cfg})
    assert put["version"] == 1 and put["pushed"] == []
    got = await api.ok("GET", f"/tunnels/{tid}/configurations")
    assert got["version"] == 1 and got["config"] == cfg and got["status"] == "pending"
    assert (await api.ok("POST", f"/tunnels/{tid}/cleanup"))["closed_connections"] == 0
    await api.ok("DELETE", "/routes/app.example.com")
    assert await api.ok("GET", "/routes") == []
    await api.ok("DELETE", f"/tunnels/{tid}")
    assert await api.ok("GET", "/tunnels") == []
    deleted = await api.ok("GET", "/tunnels", query={"include_deleted": "true"})
    assert deleted[0]["deleted_at"] is not None
    status, _ = await api.call("GET", f"/tunnels/{tid}")
    assert status == 404


async def test_openapi_lists_every_endpoint_and_each_answers(api: Api) -> None:
    async with api.session.get(f"{api.base}/api/v1/openapi.json") as resp:
        doc = (await resp.json())["result"]
    assert doc["openapi"].startswith("3.")
    assert len([m for p in doc["paths"].values() for m in p]) == len(ENDPOINTS)
    for method, path, *_ in ENDPOINTS:
        url = path.replace("{tunnel}", "00000000-0000-0000-0000-000000000000")
        url = url.replace("{hostname}", "x.example.com")
        status, body = await api.call(method.upper(), url, raw=b"{}")
        assert "no API endpoint" not in str(body), (method, path, status, body)


async def test_accounts_are_isolated(api: Api, other_api: Api) -> None:
    mine = await api.ok("POST", "/tunnels", {"name": "mine"})
    await api.ok("POST", "/routes", {"hostname": "mine.example.com", "tunnel_id": mine["id"]})
    theirs = await other_api.ok("POST", "/tunnels", {"name": "mine"})  # names are per account
    assert await other_api.ok("GET", "/tunnels") == [
        t for t in await other_api.ok("GET", "/tunnels") if t["id"] == theirs["id"]]
    for method, path, body in [
        ("GET", f"/tunnels/{mine['id']}", None),
        ("GET", f"/tunnels/{mine['id']}/token", None),
        ("GET", f"/tunnels/{mine['id']}/configurations", None),
        ("PUT", f"/tunnels/{mine['id']}/configurations",
         {"config": {"ingress": [{"service": "http_status:404"}]}}),
        ("DELETE", f"/tunnels/{mine['id']}", None),
        ("POST", f"/tunnels/{mine['id']}/cleanup", {}),
        ("DELETE", "/routes/mine.example.com", None),
    ]:
        status, doc = await other_api.call(method, path, body)
        assert status == 404, (method, path, doc)
    status, doc = await other_api.call("POST", "/routes", {"hostname": "mine.example.com",
                                                           "tunnel_id": theirs["id"]})
    assert status == 409 and "another account" in doc["errors"][0]["message"]
    status, doc = await other_api.call("POST", "/routes", {"hostname": "x.example.com",
                                                           "tunnel_id": mine["id"]})
    assert status == 404
    assert await other_api.ok("GET", "/routes") == []
    # within one account a hostname moves only with overwrite
    second = await api.ok("POST", "/tunnels", {"name": "second"})
    status, doc = await api.call("POST", "/routes", {"hostname": "mine.example.com",
                                                     "tunnel_id": second["id"]})
    assert status == 409 and "overwrite" in doc["errors"][0]["message"]
    await api.ok("POST", "/routes", {"hostname": "mine.example.com", "tunnel_id": second["id"],
                                     "overwrite": True})


async def test_bad_requests_get_clear_4xx(api: Api) -> None:
    cases: list[tuple[str, str, bytes, str | None, int, str]] = [
        ("POST", "/tunnels", b'{"name": ', None, 400, "malformed JSON"),
        ("POST", "/tunnels", b"[1]", None, 400, "JSON object"),
        ("POST", "/tunnels", b'{"name": "a", "colour": 1}', None, 400, "unknown field(s): colour"),
        ("POST", "/tunnels", b'{"name": 5}', None, 400, "must be str"),
        ("POST", "/tunnels", b"{}", None, 400, "missing required field 'name'"),
        ("POST", "/tunnels", b'{"name": "a", "tunnel_secret": "c2hvcnQ="}', None, 400,
         "at least 32 bytes"),
        ("POST", "/tunnels", b'{"name": "x"}', "nbt_wrong", 401, "invalid or revoked"),
        ("POST", "/tunnels", b'{"name": "x"}', "", 401, "Bearer"),
        ("POST", "/tunnels", b'{"name": "' + b"x" * 300_000 + b'"}', None, 413, "limit"),
        ("POST", "/routes", b'{"hostname": "a b", "tunnel_id": "x"}', None, 400,
         "invalid hostname"),
        ("GET", "/nothing", b"", None, 404, "no API endpoint"),
    ]
    for method, path, raw, token, status, message in cases:
        got, doc = await api.call(method, path, raw=raw, token=token)
        assert got == status, (path, raw[:40], doc)
        assert message in doc["errors"][0]["message"], doc
    async with api.session.post(f"{api.base}/api/v1/tunnels", data=b"x" * (2 * 1024 * 1024),
                                headers={"Authorization": f"Bearer {api.token}"}) as resp:
        assert resp.status == 413


async def test_deeply_nested_json_gets_400_and_the_api_keeps_serving(api: Api) -> None:
    """JSON nested 100,000 deep raised an uncaught RecursionError (issue 9)."""
    for raw, depth in [(b"[" * 100_000 + b"]" * 100_000, 100_000),
                       (b'{"name": "deep", "x": ' + b"[" * 64 + b"]" * 64 + b"}", 65)]:
        status, doc = await api.call("POST", "/tunnels", raw=raw)
        assert status == 400, doc
        assert doc["errors"][0]["message"] == (f"JSON nested {depth} levels deep; the limit "
                                               "is 64")
    brackets_in_strings = b'{"name": "' + b"[" * 100 + b'"}'
    status, doc = await api.call("POST", "/tunnels", raw=brackets_in_strings)
    assert status == 400 and "name must be" in doc["errors"][0]["message"], doc  # not depth
    await api.ok("GET", "/account")


async def test_concurrent_creates_lose_nothing(api: Api) -> None:
    results = await asyncio.gather(*(api.call("POST", "/tunnels", {"name": f"t{i % 5}"})
                                     for i in range(20)))
    assert sorted(s for s, _ in results).count(201) == 5  # one per name, the rest 409
    tid = next(d["result"]["id"] for s, d in results if s == 201)
    cfg = {"config": {"ingress": [{"service": "http_status:404"}]}}
    puts = await asyncio.gather(*(api.ok("PUT", f"/tunnels/{tid}/configurations", cfg)
                                  for _ in range(10)))
    assert sorted(p["version"] for p in puts) == list(range(1, 11))


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "edge"
    async with Edge(edge_config(state)) as edge:
        assert edge.store is not None
        from nbtunnel.edge.bootstrap import ensure_admin_token

        _, token = await ensure_admin_token(edge.store, state)
        assert token is not None and oct((state / "admin-token").stat().st_mode)[-3:] == "600"
        async with aiohttp.ClientSession() as s:
            api = Api(s, edge.api_url, token)
            t = await api.ok("POST", "/tunnels", {"name": "keep",
                                                  "tunnel_secret": base64.b64encode(
                                                      b"k" * 32).decode()})
            await api.ok("POST", "/routes", {"hostname": "keep.example.com",
                                             "tunnel_id": t["id"]})
            await api.ok("PUT", f"/tunnels/{t['id']}/configurations",
                         {"config": {"ingress": [{"service": "http_status:404"}]}})
    async with Edge(edge_config(state)) as edge:
        assert edge.store is not None
        assert (await ensure_admin_token(edge.store, state))[1] is None  # not re-issued
        async with aiohttp.ClientSession() as s:
            api = Api(s, edge.api_url, token)
            got = await api.ok("GET", f"/tunnels/{t['id']}")
            assert got["routes"] == ["keep.example.com"]
            assert Credentials.from_token(
                (await api.ok("GET", f"/tunnels/{t['id']}/token"))["token"]).secret == b"k" * 32
            assert (await api.ok("GET", f"/tunnels/{t['id']}/configurations"))["version"] == 1
        assert edge.store.resolve("KEEP.example.com") is not None
