"""Fixtures for the protocol-core tests: the optional pycapnp schemas."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the package may not be installed in the venv
    sys.path.insert(0, str(ROOT))
SCHEMA_DIR = ROOT / "nbtunnel" / "core" / "schema"


@pytest.fixture(scope="session")
def pycapnp() -> SimpleNamespace:
    """pycapnp with our schema files and the standard rpc.capnp loaded (skip if missing)."""
    capnp = pytest.importorskip("capnp")
    base = os.path.dirname(capnp.__file__)
    return SimpleNamespace(
        capnp=capnp,
        rpc=capnp.load(os.path.join(base, "rpc.capnp"), imports=[os.path.dirname(base)]),
        tunnel=capnp.load(str(SCHEMA_DIR / "tunnelrpc.capnp")),
        quic=capnp.load(str(SCHEMA_DIR / "quic_metadata_protocol.capnp")),
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long fuzz runs only when asked for: `pytest -m fuzz tests/core`."""
    if "fuzz" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="long fuzz run: pytest -m fuzz tests/core")
    for item in items:
        if item.get_closest_marker("fuzz") is not None:
            item.add_marker(skip)
