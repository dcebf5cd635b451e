"""Where the CLI's edge comes from: flag, config.yml, $NBTUNNEL_EDGE, config.json, default."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from nbtunnel.cli.edge_choice import choose_edge
from nbtunnel.cli.run_named import _default_edge
from nbtunnel.core.credentials import Credentials
from nbtunnel.core.errors import NbtunnelError
from nbtunnel.edge.store import Store
from nbtunnel.edge.stores import SQLITE_FILE


@pytest.fixture(autouse=True)
def _no_edge_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBTUNNEL_HOME", str(tmp_path))
    monkeypatch.delenv("NBTUNNEL_EDGE", raising=False)


def test_default_address_is_an_address() -> None:
    """`tunnel run` with a local edge set up defaults to 127.0.0.1:7844; it used to come back
    as a kind with no address and the connector died dividing by zero."""
    choice = choose_edge(None, None, default="127.0.0.1:7844")
    assert (choice.kind, choice.addresses) == ("address", (("127.0.0.1", 7844),))
    assert choose_edge(None, None).kind == "auto"
    assert choose_edge(None, None, default="cloudflare").kind == "cloudflare"


def test_bad_config_value_is_a_clear_error() -> None:
    with pytest.raises(NbtunnelError, match=r"edge from config\.yml: .*cloudflare, local, auto"):
        choose_edge(None, "127.0.0.1:notaport")


def test_config_json_edge_and_its_errors(tmp_path: Path) -> None:
    """config.json is read by one function for the CLI and the Python API."""
    (tmp_path / "config.json").write_text('{"edge": "127.0.0.1:7000,127.0.0.1:7001"}')
    choice = choose_edge(None, None)
    assert choice.addresses == (("127.0.0.1", 7000), ("127.0.0.1", 7001))
    assert choice.source == str(tmp_path / "config.json")
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(NbtunnelError, match=r"config\.json must hold a JSON object"):
        choose_edge(None, None)
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(NbtunnelError, match=r"cannot read .*config\.json"):
        choose_edge(None, None)


def _creds(tunnel_id: uuid.UUID) -> Credentials:
    return Credentials("acct", tunnel_id, b"s" * 32)


def test_a_token_goes_to_the_edge_that_issued_it(tmp_path: Path) -> None:
    """A machine that once ran `nbtunnel edge` no longer sends every token there: only the
    local edge's own tunnels go to 127.0.0.1:7844, a Cloudflare token goes to Cloudflare; the
    edge's database is read while the edge runs (its WAL not yet checkpointed) and after."""
    edge_dir = tmp_path / "edge"
    assert _default_edge(_creds(uuid.uuid4())) == "cloudflare"  # no local edge at all
    edge_dir.mkdir()
    (edge_dir / "ca.pem").write_text("a CA")
    assert _default_edge(_creds(uuid.uuid4())) == "127.0.0.1:7844"  # store unreadable: as before
    store = Store(edge_dir / SQLITE_FILE)  # the running edge
    ours = store.create_tunnel("mine", account_tag="acct").id
    gone = store.create_tunnel("gone", account_tag="acct").id
    store.delete_tunnel(gone)
    for _ in range(2):
        assert _default_edge(_creds(ours)) == "127.0.0.1:7844"
        assert _default_edge(_creds(uuid.uuid4())) == "cloudflare"
        assert _default_edge(_creds(gone)) == "cloudflare"
        assert {p.name: p.stat().st_mode & 0o777 for p in edge_dir.glob(SQLITE_FILE + "*")} \
            == {SQLITE_FILE: 0o600, SQLITE_FILE + "-wal": 0o600, SQLITE_FILE + "-shm": 0o600}
        store.close()  # then the edge stopped
