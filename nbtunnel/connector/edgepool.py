"""Which edge address each HA connection uses, as cloudflared's allregions package does.

Discovery yields two regions. Each connection index holds one address (at most one connection
per address); a new index takes an unused address from the region with more of them free, so
HA connections spread over both regions. A connection rotates to another address after a dial
error, an idle timeout or the edge's duplicate-connection answer (EDUPCONN). A region whose
IPv6 address failed to connect uses its IPv4 addresses for ten minutes. Sans-I/O: time comes
in as `now`, chance as `rng`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from nbtunnel.connector.discovery import EdgeAddr

IPV4_PERIOD = 600.0  # cloudflared's region timeoutDuration


@dataclass
class _Region:
    primary: list[EdgeAddr]
    secondary: list[EdgeAddr]
    used: dict[EdgeAddr, int] = field(default_factory=dict)  # address -> connection index
    primary_active: bool = True
    primary_until: float = 0.0

    @classmethod
    def of(cls, addrs: Sequence[EdgeAddr], ip_version: str) -> _Region:
        v4 = [a for a in addrs if a.version == 4]
        v6 = [a for a in addrs if a.version == 6]
        if ip_version == "4":
            return cls(v4, [])
        if ip_version == "6":
            return cls(v6, [])
        first_v6 = bool(addrs) and addrs[0].version == 6
        return cls(v6, v4) if first_v6 else cls(v4, v6)

    @property
    def active(self) -> list[EdgeAddr]:
        return self.primary if self.primary_active else self.secondary

    def available(self) -> int:
        return sum(1 for a in self.active if a not in self.used)

    def used_by(self, index: int) -> EdgeAddr | None:
        return next((a for a, i in self.used.items() if i == index), None)

    def assign(self, index: int, excluding: EdgeAddr | None, rng: random.Random) -> EdgeAddr | None:
        free = [a for a in self.active if a not in self.used and a != excluding]
        if not free:
            return None
        addr = rng.choice(free)
        self.used[addr] = index
        return addr

    def give_back(self, addr: EdgeAddr, connectivity_error: bool, now: float) -> bool:
        if addr not in self.primary and addr not in self.secondary:
            return False
        self.used.pop(addr, None)
        if not connectivity_error:
            return True
        if self.primary_active and addr.version == 6 and self.secondary:
            self.primary_active = False  # IPv6 broke: use the other family for a while
            self.primary_until = now + IPV4_PERIOD
        elif not self.primary_active and (addr.version == 4 or self.primary_until < now):
            self.primary_active = True
        return True


class EdgePool:
    """Addresses of Cloudflare's regions, handed out one per connection index."""

    def __init__(self, regions: Sequence[Sequence[EdgeAddr]], ip_version: str = "auto",
                 rng: random.Random | None = None) -> None:
        self._regions = [_Region.of(r, ip_version) for r in regions]
        self._rng = rng or random.Random()

    def available(self) -> int:
        """Addresses no connection holds (what caps the HA connection count at start)."""
        return sum(r.available() for r in self._regions)

    def used_by(self, index: int) -> EdgeAddr | None:
        for region in self._regions:
            if (addr := region.used_by(index)) is not None:
                return addr
        return None

    def region_of(self, addr: EdgeAddr) -> int:
        for n, region in enumerate(self._regions):
            if addr in region.primary or addr in region.secondary:
                return n + 1
        return 0

    def addr_for(self, index: int) -> EdgeAddr | None:
        """The address this connection already holds, else an unused one (None: none left)."""
        return self.used_by(index) or self._assign(index, None)

    def rotate(self, index: int, connectivity_error: bool, now: float) -> EdgeAddr | None:
        """Give this connection's address back and take a different one."""
        old = self.used_by(index)
        if old is not None:
            for region in self._regions:
                if region.give_back(old, connectivity_error, now):
                    break
        return self._assign(index, old)

    def _assign(self, index: int, excluding: EdgeAddr | None) -> EdgeAddr | None:
        regions = list(self._regions)
        if len(regions) == 2:
            a, b = (r.available() for r in regions)
            if b > a or (a == b and self._rng.random() < 0.5):
                regions.reverse()
        for region in regions:
            if (addr := region.assign(index, excluding, self._rng)) is not None:
                return addr
        return None
