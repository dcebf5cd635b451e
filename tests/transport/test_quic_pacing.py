"""The qh3 adapter's pacer: qh3's rate, quic-go's burst size and wake-up granularity."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from nbtunnel.transport.quic import available_backends

pytestmark = pytest.mark.skipif("qh3" not in available_backends(), reason="qh3 not installed")


def _burst(pacer: object, now: float) -> int:
    sent = 0
    while pacer.next_send_time(now) is None:  # type: ignore[attr-defined]
        pacer.update_after_send(now)  # type: ignore[attr-defined]
        sent += 1
        assert sent < 1000
    return sent


def test_bursts_of_two_milliseconds_then_wakes_a_millisecond_apart_at_the_same_rate() -> None:
    from nbtunnel.transport.quic._qh3 import _Pacer

    quic = SimpleNamespace(_max_datagram_size=1000)
    pacer = _Pacer(quic)
    assert pacer.next_send_time(0.0) is None  # no RTT sample yet: no pacing
    # 100 kB window / 10 ms RTT = 10 MB/s: a 1000-byte packet every 100 us
    pacer.start_pacing(0.0, congestion_window=100_000, smoothed_rtt=0.010)
    assert _burst(pacer, 0.0) == 20  # 2 ms of the rate at once
    wake = pacer.next_send_time(0.0)
    assert wake == pytest.approx(0.001)  # not 100 us: quic-go's MinPacingDelay
    assert _burst(pacer, 0.001) == 10  # what 1 ms earned
    sent = sum(_burst(pacer, 0.001 * i) for i in range(2, 102))
    assert sent == 1000  # 10 MB/s over 100 ms: the rate itself is qh3's
    # a slow path: at least 10 packets per burst (1 MB/s: 2 ms would be 2 packets)
    pacer.update_rate(congestion_window=10_000, smoothed_rtt=0.010)
    assert _burst(pacer, 1.0) == 10
    assert pacer.next_send_time(1.0) == pytest.approx(1.001)
    # the datagram size is read live (path MTU probing raises it): fewer, bigger packets
    quic._max_datagram_size = 2000
    pacer.update_rate(congestion_window=100_000, smoothed_rtt=0.010)
    assert _burst(pacer, 2.0) == 10
