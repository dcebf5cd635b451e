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


def test_registry_round_robin_skips_draining_and_closed() -> None:
    reg = Registry()
    tid = uuid.uuid4()
    conns = [_live(tid, i) for i in range(4)]
    for c in conns:
        reg.add(c)
    picked = {reg.pick(tid).conn_index for _ in range(8)}  # type: ignore[union-attr]
    assert picked == {0, 1, 2, 3}
    conns[0].draining = True
    conns[1].transport.close(0, "gone")
    assert {reg.pick(tid).conn_index for _ in range(8)} == {2, 3}  # type: ignore[union-attr]
    for c in conns[2:]:
        reg.remove(c)
    assert reg.pick(tid) is None
    assert reg.pick(uuid.uuid4()) is None


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
    assert {reg.pick(tid).conn_index for _ in range(9)} == {1, 2}  # type: ignore[union-attr]
    for c in conns[1:]:
        _memory(c).silent_for = 10.0
    assert reg.pick(tid) is not None  # all silent: still try one rather than a 530
