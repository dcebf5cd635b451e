"""The minimum request-body rate on a hand-driven clock (no waiting)."""

from __future__ import annotations

import pytest

from nbtunnel.edge.body_rate import BodyRate


def _reads(rate: BodyRate, n: int, size: int, wait: float, held: float = 0.0) -> list[str | None]:
    """``n`` reads of ``size`` bytes, each after ``wait`` s of waiting for the client and
    followed by ``held`` s the edge spends forwarding it; the verdict on each."""
    now = 0.0
    verdicts = []
    for _ in range(n):
        rate.waiting(now)
        now += wait
        verdicts.append(rate.received(size, now))
        now += held
    return verdicts


def test_a_dripping_body_is_refused_once_the_grace_period_is_over() -> None:
    # one byte every 9 s: each silence is short, the average is not
    verdicts = _reads(BodyRate(min_rate=100, grace=10), 3, 1, wait=9)
    assert verdicts[:1] == [None]  # 9 s waited: still in the grace period
    assert verdicts[1] is not None and "2 bytes in 18 s" in verdicts[1]
    assert "the minimum is 100 bytes/s" in verdicts[1]


@pytest.mark.parametrize("held", [0, 60], ids=["steady", "held-up-a-minute-per-read"])
def test_a_steady_body_passes_and_time_the_edge_is_held_up_does_not_count(held: float) -> None:
    """Between reads the edge may wait on the connector (back-pressure): not the client's
    time."""
    rate = BodyRate(min_rate=100, grace=10)
    assert _reads(rate, 100, 150, wait=1, held=held) == [None] * 100
    assert rate.waited == 100


def test_a_quick_start_buys_time_and_then_runs_out() -> None:
    rate = BodyRate(min_rate=100, grace=10)
    rate.waiting(0)
    assert rate.received(2000, 1) is None  # 2000 bytes: good for 20 s of waiting at 100/s
    rate.waiting(1)
    assert rate.received(1, 19) is None
    rate.waiting(19)
    assert rate.received(1, 21) is not None


def test_zero_disables_the_minimum() -> None:
    rate = BodyRate(min_rate=0, grace=10)
    rate.waiting(0)
    assert rate.received(1, 1000) is None


def test_a_read_that_ends_without_bytes_still_counts_its_wait() -> None:
    rate = BodyRate(min_rate=100, grace=10)
    rate.waiting(0)
    assert rate.received(0, 30) is not None
