"""Unit tests of the edge's pure parts: store persistence, registry selection, pages."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from nbtunnel.edge.pages import error_page, wants_html
from nbtunnel.edge.registry import LiveConnection, Registry
from nbtunnel.edge.store import Store, StoreError
from nbtunnel.transport.memory import MemoryConnection, memory_pair


def test_store_persists_tunnels_and_routes(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = Store(path)
    t = store.create_tunnel("one", account_tag="acct")
    store.add_route("App.Example", t.id)
    other = store.create_tunnel("two", account_tag="acct")
    with pytest.raises(StoreError, match="already routed"):
        store.add_route("app.example", other.id)
    with pytest.raises(StoreError, match="unknown tunnel"):
        store.add_route("x.example", uuid.uuid4())
    store.close()
    again = Store(path)
    assert again.get_tunnel(t.id) == t
    assert again.resolve("APP.example") == t.id
    assert len(t.secret) == 32


def _live(tid: uuid.UUID, index: int) -> LiveConnection:
    edge_end, _ = memory_pair()
    return LiveConnection(tid, index, uuid.uuid4(), uuid.uuid4(), "quic", "LOC", "", "v", "a",
                          [], 0.0, edge_end)


def _memory(live: LiveConnection) -> MemoryConnection:
    assert isinstance(live.transport, MemoryConnection)
    return live.transport


def _busy_picks(reg: Registry, tid: uuid.UUID, n: int) -> list[int]:
    """``n`` requests in flight at once: each pick counts as in flight, as an exchange does."""
    picked = []
    for _ in range(n):
        live = reg.pick(tid)
        assert live is not None
        live.in_flight += 1
        picked.append(live.conn_index)
    return picked


def test_registry_spreads_concurrent_requests_and_skips_draining_and_closed() -> None:
    reg = Registry()
    tid = uuid.uuid4()
    conns = [_live(tid, i) for i in range(4)]
    for c in conns:
        reg.add(c)
    assert sorted(_busy_picks(reg, tid, 8)) == [0, 0, 1, 1, 2, 2, 3, 3]  # fewest in flight
    for c in conns:
        c.in_flight = 0
    conns[0].draining = True
    conns[1].transport.close(0, "gone")
    assert sorted(_busy_picks(reg, tid, 4)) == [2, 2, 3, 3]
    for c in conns[2:]:
        reg.remove(c)
    assert reg.pick(tid) is None
    assert reg.pick(uuid.uuid4()) is None


def test_registry_reuses_one_warm_connection_at_concurrency_1() -> None:
    reg = Registry()
    tid = uuid.uuid4()
    conns = [_live(tid, i) for i in range(4)]
    for c in conns:
        reg.add(c)
    assert {reg.pick(tid).conn_index for _ in range(8)} == {0}  # type: ignore[union-attr]
    conns[0].in_flight = 1  # busy: the next idle one, the same one every time
    assert {reg.pick(tid).conn_index for _ in range(8)} == {1}  # type: ignore[union-attr]
    conns[0].in_flight = 0
    picked = reg.pick(tid, exclude=conns[0])  # a retry goes elsewhere
    assert picked is not None and picked.conn_index == 1


def test_pages_html_for_browsers_text_for_curl() -> None:
    assert wants_html([(b"Accept", b"text/html,*/*")])
    assert not wants_html([(b"Accept", b"text/html"), (b"User-Agent", b"curl/8")])
    ctype, body = error_page(502, "<bad> cause", ray="r-LOC", as_html=True)
    assert ctype.startswith(b"text/html") and b"&lt;bad&gt;" in body
    ctype, body = error_page(530, "x", ray="r-LOC", as_html=False)
    assert body.startswith(b"530 ") and b"r-LOC" in body


def test_registry_prefers_connections_that_are_not_silent() -> None:
    reg = Registry()
    tid = uuid.uuid4()
    conns = [_live(tid, i) for i in range(3)]
    for c in conns:
        reg.add(c)
    _memory(conns[0]).silent_for = 10.0  # a SIGKILLed replica
    assert set(_busy_picks(reg, tid, 9)) == {1, 2}
    for c in conns[1:]:
        _memory(c).silent_for = 10.0
    assert reg.pick(tid) is not None  # all silent: still try one rather than a 530
