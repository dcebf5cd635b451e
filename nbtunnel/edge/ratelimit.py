"""Per-client token buckets: how the edge refuses floods of free, unauthenticated work.

Quick tunnels need no account, so creating them is rate-limited per client address, as
trycloudflare does (it answers `429` with `error code: 1015`). IPv6 clients are keyed by their
/64: one host usually owns the whole prefix. Pure logic: callers pass `now`.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

MAX_CLIENTS = 10_000  # buckets kept; full buckets are dropped first (they carry no state)


@dataclass
class _Bucket:
    tokens: float
    updated: float
    refusing: bool = False


@dataclass(frozen=True)
class Verdict:
    """Whether a request may go ahead; `first` marks the first refusal of an episode (log it
    once, not once per request)."""

    allowed: bool
    retry_in: float = 0.0
    first: bool = False


class RateLimiter:
    """`rate` tokens per second per client, at most `burst` saved up; `rate` 0 disables."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate < 0 or burst < 1:
            raise ValueError("rate must be >= 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    @staticmethod
    def client_key(address: str) -> str:
        """The address that identifies a client: IPv4 as is, IPv6 by its /64."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ipaddress.IPv6Network((ip, 64), strict=False))
        return str(ip)

    def take(self, address: str, now: float) -> Verdict:
        """Spend one token if there is one."""
        if self.rate == 0:
            return Verdict(True)
        key = self.client_key(address)
        bucket = self._buckets.get(key)
        if bucket is None:
            self._prune(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1 - 1e-9:  # float steps: 6 s at 1/6 per second is one token
            bucket.tokens = max(0.0, bucket.tokens - 1)
            bucket.refusing = False
            return Verdict(True)
        first, bucket.refusing = not bucket.refusing, True
        return Verdict(False, (1 - bucket.tokens) / self.rate, first)

    def _prune(self, now: float) -> None:
        if len(self._buckets) < MAX_CLIENTS:
            return
        full = [k for k, b in self._buckets.items()
                if b.tokens + (now - b.updated) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= MAX_CLIENTS:  # all busy: forget the oldest
            oldest = min(self._buckets, key=lambda k: self._buckets[k].updated)
            del self._buckets[oldest]


def retry_after(seconds: float) -> int:
    """A `Retry-After` value: whole seconds, at least 1."""
    return max(1, math.ceil(seconds - 1e-6))  # 5.000000000000001 is 5
