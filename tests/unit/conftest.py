"""The long fuzz runs of the unit tests only when asked for (`pytest -m fuzz tests/unit`)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "fuzz" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="long fuzz run: pytest -m fuzz tests/unit")
    for item in items:
        if item.get_closest_marker("fuzz") is not None:
            item.add_marker(skip)
