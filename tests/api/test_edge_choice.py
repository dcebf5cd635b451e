"""Where the CLI's edge comes from: flag, config.yml, $NBTUNNEL_EDGE, config.json, default."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbtunnel.cli.edge_choice import choose_edge
from nbtunnel.core.errors import NbtunnelError


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
