"""Fixtures: Cloudflare's DNS, DoT, API and edge played on 127.0.0.1 (cfcloud, cfstubs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cloudflare.cfcloud import Cloud, cloudflare_zone, start_cloud, stop_cloud
from tests.cloudflare.cfstubs import DnsStub, DotStub, TestPKI
from tests.e2e.conftest import origin

__all__ = ["origin"]


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


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Cloud]:
    c = await start_cloud(tmp_path)
    yield c
    await stop_cloud(c)
