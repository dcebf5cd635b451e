"""Lab test fixtures (helpers live in lab_helpers.py: conftest modules share one name)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lab_helpers import counting_origin

__all__ = ["counting_origin"]


@pytest.fixture(autouse=True)
def local_edge_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Notebooks run with `%tunnel PORT`: pin the local edge (the default `auto` would try
    Cloudflare first, making the tests depend on the network)."""
    monkeypatch.setenv("NBTUNNEL_EDGE", "local")
    yield
