"""The per-client token bucket behind the quick-tunnel rate limit (pure, time passed in)."""

from __future__ import annotations

import pytest

from nbtunnel.edge import ratelimit
from nbtunnel.edge.ratelimit import RateLimiter, retry_after


def test_burst_then_steady_rate_then_one_log_line_per_episode() -> None:
    limiter = RateLimiter(rate=1 / 6, burst=3)
    assert all(limiter.take("10.0.0.1", 0).allowed for _ in range(3))
    first, second = limiter.take("10.0.0.1", 0), limiter.take("10.0.0.1", 1)
    assert not first.allowed and first.first and retry_after(first.retry_in) == 6
    assert not second.allowed and not second.first and retry_after(second.retry_in) == 5
    assert limiter.take("10.0.0.2", 1).allowed  # another client
    assert limiter.take("10.0.0.1", 6).allowed
    again = limiter.take("10.0.0.1", 6)
    assert not again.allowed and again.first  # a new episode after an allowed request


def test_ipv6_clients_share_their_64_and_mapped_ipv4_is_ipv4() -> None:
    limiter = RateLimiter(rate=1, burst=1)
    assert limiter.take("2001:db8::1", 0).allowed
    assert not limiter.take("2001:db8::ffff:2", 0).allowed  # same /64
    assert limiter.take("2001:db8:0:1::1", 0).allowed
    assert RateLimiter.client_key("::ffff:192.0.2.7") == "192.0.2.7"


def test_zero_rate_means_no_limit() -> None:
    limiter = RateLimiter(rate=0, burst=1)
    assert all(limiter.take("10.0.0.1", 0).allowed for _ in range(1000))


def test_memory_is_bounded_by_max_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "MAX_CLIENTS", 100)
    limiter = RateLimiter(rate=1, burst=2)
    for i in range(1000):
        for _ in range(2):
            limiter.take(f"10.0.{i // 256}.{i % 256}", i / 1000)
    assert len(limiter._buckets) <= 100
