"""Both store backends behave the same; the PostgreSQL one is shared by several edges and keeps
their in-memory route caches current through LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psycopg
import pytest

from nbtunnel.edge.stores import open_store
from nbtunnel.edge.stores.base import ControlStore, HostnameTaken, RouteConflict, StoreError
from nbtunnel.edge.stores.postgres import PostgresStore, redact


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ControlStore]:
    spec = None if request.param == "sqlite" else request.getfixturevalue("pg_url")
    s = open_store(spec, tmp_path)
    await s.start()
    assert s.backend == request.param
    try:
        yield s
    finally:
        await s.aclose()


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition another task brings about (a notification), with a deadline."""
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - the cache is updated by a background task
            await asyncio.sleep(0.005)


async def test_tunnels_routes_and_conflicts(store: ControlStore) -> None:
    a = await store.create_tunnel("web", account_tag="acct-a")
    a2 = await store.create_tunnel("api", account_tag="acct-a")
    b = await store.create_tunnel("web", account_tag="acct-b")
    with pytest.raises(StoreError, match="already exists"):
        await store.create_tunnel("web", account_tag="acct-a")
    await store.claim_route("App.Example.com", a.id, account_tag="acct-a")
    assert store.resolve("app.example.COM") == a.id
    assert store.hostnames(a.id) == ["app.example.com"]
    with pytest.raises(RouteConflict) as other:
        await store.claim_route("app.example.com", b.id, account_tag="acct-b", overwrite=True)
    assert other.value.other_account
    with pytest.raises(RouteConflict) as mine:
        await store.claim_route("app.example.com", a2.id, account_tag="acct-a")
    assert not mine.value.other_account and "overwrite" in str(mine.value)
    await store.claim_route("app.example.com", a2.id, account_tag="acct-a", overwrite=True)
    assert store.resolve("app.example.com") == a2.id and store.hostnames(a.id) == []
    assert not await store.remove_route("app.example.com", account_tag="acct-b")
    assert await store.remove_route("app.example.com", account_tag="acct-a")
    assert store.resolve("app.example.com") is None
    await store.claim_route("x.example.com", a.id, account_tag="acct-a")
    await store.delete_tunnel(a.id)
    assert store.get_tunnel(a.id) is None and store.resolve("x.example.com") is None
    assert [t.name for t in await store.find_tunnels("acct-a", include_deleted=True)] == [
        "web", "api"]
    assert [t.name for t in await store.find_tunnels("acct-a")] == ["api"]


async def test_quick_tunnels_accounts_tokens_configs(store: ControlStore) -> None:
    q = await store.create_quick_tunnel("Quick-One.localhost", account_tag="q")
    assert q.kind == "quick" and store.resolve("quick-one.localhost") == q.id
    with pytest.raises(HostnameTaken):
        await store.create_quick_tunnel("quick-one.localhost", account_tag="q2")
    assert len([t for t in store.tunnels() if t.kind == "quick"]) == 1  # rolled back
    await store.purge_tunnel(q.id)  # an expired quick tunnel leaves nothing behind
    assert store.resolve("quick-one.localhost") is None and store.get_tunnel(q.id) is None
    assert await store.lookup_tunnel(q.id) is None
    acct = await store.create_account("team")
    with pytest.raises(StoreError):
        await store.create_account("team")
    token = await store.create_api_token(acct.tag, "ci")
    assert (await store.authenticate(token)) == acct
    assert await store.authenticate(token + "x") is None
    assert await store.account(name="team") == acct
    t = await store.create_tunnel("cfg", account_tag=acct.tag)
    versions = await asyncio.gather(*(store.add_configuration(t.id, {"n": i})
                                      for i in range(10)))
    assert sorted(versions) == list(range(1, 11))
    await store.set_configuration_status(t.id, 10, "rejected", "no")
    rec = await store.configuration(t.id)
    assert rec is not None and rec.version == 9
    cid = uuid.uuid4()
    await store.save_local_config(t.id, cid, b'{"a":1}')
    await store.save_local_config(t.id, cid, b'{"a":2}')
    assert await store.local_configs(t.id) == {str(cid): '{"a":2}'}


async def test_changes_reach_another_edges_cache(pg_url: str, tmp_path: Path) -> None:
    one, two = PostgresStore(pg_url), PostgresStore(pg_url)
    await asyncio.gather(one.start(), two.start())  # both migrate at once: one wins
    try:
        assert one.schema_version == two.schema_version == 3
        t = await one.create_tunnel("shared", account_tag="acct")
        await one.claim_route("shared.example.com", t.id, account_tag="acct")
        await until(lambda: two.resolve("shared.example.com") == t.id)
        assert two.get_tunnel(t.id) == t
        await one.remove_route("shared.example.com")
        await until(lambda: two.resolve("shared.example.com") is None)
        # a tunnel the cache has not heard of yet is found in the database at registration
        other = await one.create_tunnel("fresh", account_tag="acct")
        assert await two.lookup_tunnel(other.id) == other
        await one.delete_tunnel(other.id)
        await until(lambda: two.get_tunnel(other.id) is None)
    finally:
        await one.aclose()
        await two.aclose()


async def test_cache_reloads_after_losing_the_change_feed(pg_url: str) -> None:
    edge, writer = PostgresStore(pg_url), PostgresStore(pg_url)
    await edge.start()
    await writer.start()
    try:
        assert edge.listener is not None
        reloads = edge.listener.reloads
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN%%' AND pid != pg_backend_pid()")
        t = await writer.create_tunnel("during", account_tag="acct")
        await writer.claim_route("during.example.com", t.id, account_tag="acct")
        await until(lambda: edge.resolve("during.example.com") == t.id, timeout=15)
        assert edge.listener.reloads > reloads
    finally:
        await edge.aclose()
        await writer.aclose()


async def test_unreachable_database_is_one_clear_error(tmp_path: Path) -> None:
    from tests.scale.services import free_port

    url = f"postgresql://nbtunnel:s3cret@127.0.0.1:{free_port()}/nope"
    store = PostgresStore(url)
    with pytest.raises(StoreError) as err:
        await store.start()
    assert "cannot use PostgreSQL at postgresql://nbtunnel:***@127.0.0.1" in str(err.value)
    assert "s3cret" not in str(err.value) and redact(url) != url
