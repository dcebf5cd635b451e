"""The opt-in memory reporter (NBTUNNEL_MEMDEBUG) finds what grows and who holds it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nbtunnel.cli.memdebug import MemoryReporter, install_from_env


class _Leaky:
    pass


def test_growth_since_the_baseline_and_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "report.txt"
    reporter = MemoryReporter(path, every=1, refs=("_Leaky",))
    reporter.report()  # before start-up
    reporter.report()  # the baseline
    kept: list[_Leaky] = [_Leaky() for _ in range(50)]
    reporter.report()
    text = path.read_text()
    assert len(re.findall(r"^=== t=\d+s rss=[\d.]+MiB", text, re.M)) == 3
    assert re.search(r"^\s+\+50 \(\+50\) \[50\] \S+\._Leaky$", text, re.M), text
    assert "-- back references of _Leaky (50 live)" in text
    assert "<- builtins.list(len=50)" in text  # `kept`, the holder
    assert "-- malloc: in use" in text or "-- malloc: n/a" in text
    del kept


def test_off_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NBTUNNEL_MEMDEBUG", raising=False)
    assert install_from_env() is None
