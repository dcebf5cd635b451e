"""Edge address allocation (sans-I/O): cloudflared's allregions rules."""

from __future__ import annotations

import random

from nbtunnel.connector.discovery import EdgeAddr
from nbtunnel.connector.edgepool import IPV4_PERIOD, EdgePool

R1 = [EdgeAddr(f"198.41.192.{i}", 7844) for i in (1, 2, 3)]
R2 = [EdgeAddr(f"198.41.200.{i}", 7844) for i in (1, 2, 3)]


def test_connections_spread_over_both_regions_one_per_address() -> None:
    pool = EdgePool([R1, R2], rng=random.Random(1))
    assert pool.available() == 6
    addrs = [pool.addr_for(i) for i in range(4)]
    assert len(set(addrs)) == 4
    regions = [pool.region_of(a) for a in addrs if a is not None]
    assert regions.count(1) == 2 and regions.count(2) == 2
    assert pool.addr_for(2) == addrs[2]  # an index keeps its address
    assert pool.available() == 2


def test_ha_count_is_capped_by_the_addresses() -> None:
    pool = EdgePool([R1[:1], R2[:1]])
    assert pool.available() == 2
    assert pool.addr_for(0) is not None and pool.addr_for(1) is not None
    assert pool.addr_for(2) is None


def test_rotation_takes_a_different_address() -> None:
    pool = EdgePool([R1[:1], R2[:1]], rng=random.Random(3))
    first = pool.addr_for(0)
    second = pool.rotate(0, connectivity_error=True, now=0.0)
    assert second is not None and second != first
    third = pool.rotate(0, connectivity_error=False, now=0.0)
    assert third == first  # only two addresses: it comes back to the first


def test_rotation_when_the_only_address_is_held_elsewhere() -> None:
    pool = EdgePool([R1[:1], R2[:1]])
    a0, a1 = pool.addr_for(0), pool.addr_for(1)
    assert pool.rotate(0, connectivity_error=False, now=0.0) is None  # nothing free
    assert pool.addr_for(0) == a0  # given back: free again on the next try
    assert a1 is not None


def test_ipv6_failure_switches_the_region_to_ipv4_for_ten_minutes() -> None:
    v6 = EdgeAddr("2606:4700:a0::1", 7844)
    v6b = EdgeAddr("2606:4700:a0::2", 7844)
    v4 = EdgeAddr("198.41.192.7", 7844)
    pool = EdgePool([[v6, v6b, v4], []], rng=random.Random(0))
    first = pool.addr_for(0)
    assert first is not None and first.version == 6  # the first family answered is preferred
    other = pool.addr_for(1)
    assert other is not None and other.version == 6
    assert pool.rotate(0, connectivity_error=True, now=100.0) == v4
    assert pool.available() == 0  # IPv6 addresses are not offered while IPv4 is active
    # conn 1's IPv6 address fails within the ten minutes: the region stays on IPv4
    assert pool.rotate(1, connectivity_error=True, now=200.0) is None
    # an IPv4 failure goes straight back to the primary family
    pool2 = EdgePool([[v6, v4], []])
    assert pool2.addr_for(0) == v6
    assert pool2.rotate(0, connectivity_error=True, now=0.0) == v4
    assert pool2.rotate(0, connectivity_error=True, now=10.0) == v6
    assert IPV4_PERIOD == 600.0


def test_forced_families() -> None:
    v6 = EdgeAddr("2606:4700:a0::1", 7844)
    v4 = EdgeAddr("198.41.192.7", 7844)
    assert EdgePool([[v6, v4], []], ip_version="4").addr_for(0) == v4
    assert EdgePool([[v4, v6], []], ip_version="6").addr_for(0) == v6
    assert EdgePool([[v4], []], ip_version="6").available() == 0
