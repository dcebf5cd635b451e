"""Fixtures: Cloudflare's DNS, DoT and API played on 127.0.0.1 with a test root (cfstubs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cfstubs import DnsStub, DotStub, TestPKI, Zone

SRV = "_v2-origintunneld._tcp.argotunnel.com."


def cloudflare_zone(port: int, region1: list[str], region2: list[str],
                    api: str = "127.0.0.1") -> Zone:
    """SRV -> region1/region2.v2.argotunnel.com:port, their A/AAAA, and the API's A."""
    zone: Zone = {
        (SRV, "SRV"): [f"1 1 {port} region1.v2.argotunnel.com.",
                       f"1 1 {port} region2.v2.argotunnel.com."],
        ("api.trycloudflare.com.", "A"): [api],
    }
    for name, ips in (("region1", region1), ("region2", region2)):
        v4 = [ip for ip in ips if ":" not in ip]
        v6 = [ip for ip in ips if ":" in ip]
        fq = f"{name}.v2.argotunnel.com."
        if v4:
            zone[(fq, "A")] = v4
        if v6:
            zone[(fq, "AAAA")] = v6
    return zone


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return TestPKI(tmp_path / "pki")


@pytest.fixture
async def dns_stub() -> AsyncIterator[DnsStub]:
    stub = await DnsStub.start(cloudflare_zone(7844, ["127.0.0.1"], ["127.0.0.2"]))
    yield stub
    stub.close()


@pytest.fixture
async def dot_stub(pki: TestPKI) -> AsyncIterator[DotStub]:
    stub = await DotStub(cloudflare_zone(7844, ["127.0.0.3"], ["127.0.0.4"]), pki).start()
    yield stub
    await stub.close()
