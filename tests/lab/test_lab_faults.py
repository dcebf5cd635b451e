"""Faults injected in the lab's own layers: latency, throttling, resets, closes, blackholes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from lab_helpers import CountingOrigin
from nbtunnel_lab import FaultError, Lab


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(public=False, origin_side=False, ha_connections=1) as lab:
        yield lab


def _wait(cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_tunnel_delay_shows_in_latency(lab: Lab) -> None:
    base = min(lab.request("/").elapsed for _ in range(3))
    fault = lab.inject("delay", seconds=0.5, direction="e2c")
    slow = lab.request("/")
    fault.cancel()
    after = lab.request("/")
    assert slow.status == 200 and slow.elapsed >= base + 0.45, (base, slow.elapsed)
    assert slow.elapsed < base + 1.5
    assert after.elapsed < base + 0.3


def test_throttle_slows_the_response_body(lab: Lab) -> None:
    fault = lab.inject("throttle", rate=2000, direction="c2e", duration=10)
    resp = lab.request("/")
    fault.cancel()
    assert resp.status == 200 and resp.elapsed > 0.4  # ~1.4 KB at 2 KB/s


def test_reset_fails_exactly_the_next_request(lab: Lab) -> None:
    lab.inject("reset")
    assert lab.request("/").status == 502
    assert lab.request("/").status == 200
    assert lab.flows(vantage="tunnel", kind="fault")


def test_bad_faults_are_typed_errors(lab: Lab) -> None:
    with pytest.raises(FaultError, match="unknown fault"):
        lab.inject("earthquake")
    with pytest.raises(FaultError, match="seconds"):
        lab.inject("delay")


def test_close_connection_reconnects(lab: Lab) -> None:
    before = len(lab.connection_events("registered"))
    lab.inject("close", conn_index=0)
    _wait(lambda: len(lab.connection_events("registered")) > before, 15)
    assert lab.connection_events("reconnecting")[-1].conn_index == 0
    assert lab.request("/").status == 200


def test_blackhole_reconnects_without_duplicates(counting_origin: CountingOrigin) -> None:
    with Lab(origin=counting_origin.url, public=False, origin_side=False,
             ha_connections=2) as lab:
        before = [lab.request(f"/before/{i}") for i in range(4)]
        registered = len(lab.connection_events("registered"))
        lab.inject("blackhole", seconds=6)
        _wait(lambda: len(lab.connection_events("reconnecting")) >= 2, 15)
        _wait(lambda: len(lab.connection_events("registered")) >= registered + 2, 20)
        after = [lab.request(f"/after/{i}") for i in range(6)]
        assert lab.shim is not None and lab.shim.dropped > 0
        reconnecting = lab.connection_events("reconnecting")
        assert {e.conn_index for e in reconnecting} == {0, 1}
        assert all("idle timeout" in e.detail or "closed" in e.detail for e in reconnecting)
    sent = [f"/before/{i}" for i in range(4)] + [f"/after/{i}" for i in range(6)]
    for path, resp in zip(sent, before + after, strict=True):
        assert resp.status == 200 and resp.text == f"path={path}"
    assert sorted(counting_origin.seen) == sorted(sent)  # each exactly once
