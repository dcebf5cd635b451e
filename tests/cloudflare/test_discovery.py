"""Edge discovery against a DNS stub and a DoT stub on 127.0.0.1 (the production code path;
only the resolver addresses differ)."""

from __future__ import annotations

import pytest

from nbtunnel.connector.discovery import (
    DiscoveryError,
    DnsOptions,
    EdgeAddr,
    discover,
    srv_name,
)
from tests.cloudflare.cfcloud import SRV, cloudflare_zone
from tests.cloudflare.cfstubs import DnsStub, DotStub, TestPKI


def test_service_names_follow_cloudflared() -> None:
    assert srv_name() == "_v2-origintunneld._tcp.argotunnel.com"
    assert srv_name("us") == "_us-v2-origintunneld._tcp.argotunnel.com"
    assert srv_name("fed") == "_fed-v2-origintunneld._tcp.argotunnel.com"


def test_options_from_the_environment() -> None:
    opts = DnsOptions.from_env({"NBTUNNEL_DNS": "127.0.0.1:5353", "NBTUNNEL_DOT": "off"})
    assert opts.servers == (("127.0.0.1", 5353),) and opts.dot is None
    default = DnsOptions.from_env({})
    assert default.servers == () and default.dot == ("1.1.1.1", 853)
    assert default.dot_server_name == "cloudflare-dns.com"
    with pytest.raises(DiscoveryError):
        DnsOptions.from_env({"NBTUNNEL_DNS": "nonsense:port"})


async def test_srv_then_addresses_make_two_regions(dns_stub: DnsStub) -> None:
    host, port = dns_stub.address.split(":")
    found = await discover(options=DnsOptions(servers=((host, int(port)),), dot=None))
    # equal priority and weight: the order is random, as with Go's LookupSRV
    assert sorted(found.regions) == [(EdgeAddr("127.0.0.1", 7844),),
                                     (EdgeAddr("127.0.0.2", 7844),)]
    assert sorted(found.targets) == ["region1.v2.argotunnel.com", "region2.v2.argotunnel.com"]
    assert dns_stub.queries[0] == (SRV, "SRV")
    assert {q for q in dns_stub.queries[1:]} == {
        ("region1.v2.argotunnel.com.", "A"), ("region1.v2.argotunnel.com.", "AAAA"),
        ("region2.v2.argotunnel.com.", "A"), ("region2.v2.argotunnel.com.", "AAAA")}


async def test_dual_stack_regions_keep_both_families() -> None:
    stub = await DnsStub.start(cloudflare_zone(7844, ["127.0.0.1", "::1"],
                                               ["127.0.0.2", "::2"]))
    try:
        host, port = stub.address.split(":")
        found = await discover(options=DnsOptions(servers=((host, int(port)),), dot=None),
                               ip_version="auto")
        assert {a.version for a in found.regions[0]} == {4, 6}
        only4 = await discover(options=DnsOptions(servers=((host, int(port)),), dot=None),
                               ip_version="4")
        assert all(a.version == 4 for r in only4.regions for a in r)
    finally:
        stub.close()


async def test_regional_service_name_is_asked() -> None:
    zone = cloudflare_zone(7844, ["127.0.0.1"], ["127.0.0.2"])
    zone[("_us-v2-origintunneld._tcp.argotunnel.com.", "SRV")] = zone.pop((SRV, "SRV"))
    stub = await DnsStub.start(zone)
    try:
        host, port = stub.address.split(":")
        opts = DnsOptions(servers=((host, int(port)),), dot=None)
        found = await discover("us", options=opts)
        assert found.srv_name == "_us-v2-origintunneld._tcp.argotunnel.com"
        with pytest.raises(DiscoveryError, match="NXDOMAIN"):
            await discover(options=opts)  # no global record in this zone
    finally:
        stub.close()


async def test_a_single_region_is_refused_like_cloudflared() -> None:
    zone = cloudflare_zone(7844, ["127.0.0.1"], ["127.0.0.2"])
    zone[(SRV, "SRV")] = zone[(SRV, "SRV")][:1]
    stub = await DnsStub.start(zone)
    try:
        host, port = stub.address.split(":")
        with pytest.raises(DiscoveryError, match="expected at least 2 Cloudflare regions"):
            await discover(options=DnsOptions(servers=((host, int(port)),), dot=None))
    finally:
        stub.close()


async def test_dns_over_tls_answers_when_the_resolver_fails(dns_stub: DnsStub,
                                                            dot_stub: DotStub,
                                                            pki: TestPKI) -> None:
    dns_stub.refuse = True
    host, port = dns_stub.address.split(":")
    dot_host, dot_port = dot_stub.address.split(":")
    opts = DnsOptions(servers=((host, int(port)),), dot=(dot_host, int(dot_port)),
                      dot_cafile=str(pki.ca_path))
    found = await discover(options=opts)
    assert sorted(found.regions) == [(EdgeAddr("127.0.0.3", 7844),),
                                     (EdgeAddr("127.0.0.4", 7844),)]
    assert found.via == f"DNS over TLS {dot_stub.address}"
    assert "REFUSED" in found.errors[0]
    assert dot_stub.sni and set(dot_stub.sni) == {"cloudflare-dns.com"}
    assert dot_stub.queries[0] == (SRV, "SRV")


async def test_dot_is_verified(dns_stub: DnsStub, dot_stub: DotStub) -> None:
    """Without the stub's root, the DoT fallback fails TLS: it is not an unverified channel."""
    dns_stub.refuse = True
    host, port = dns_stub.address.split(":")
    dot_host, dot_port = dot_stub.address.split(":")
    opts = DnsOptions(servers=((host, int(port)),), dot=(dot_host, int(dot_port)))
    with pytest.raises(DiscoveryError) as info:
        await discover(options=opts, timeout=5.0)
    text = str(info.value)
    assert text.startswith(f"DNS lookup of {SRV.rstrip('.')} failed")
    assert "REFUSED" in text and "CERTIFICATE_VERIFY_FAILED" in text
    assert not dot_stub.queries


async def test_everything_failing_is_bounded_and_says_why() -> None:
    # a UDP port nobody answers on and a closed TCP port for DoT
    stub = await DnsStub.start({})
    stub.close()
    host, port = stub.address.split(":")
    opts = DnsOptions(servers=((host, int(port)),), dot=("127.0.0.1", 9))
    with pytest.raises(DiscoveryError, match=r"DNS over TLS 127\.0\.0\.1:9"):
        await discover(options=opts, timeout=1.0)
