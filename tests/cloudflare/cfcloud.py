"""Cloudflare played offline, assembled from cfstubs and wiretap (shared by the tests)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from nbtunnel.connector.discovery import DnsOptions
from nbtunnel.edge.bootstrap import ensure_admin_token
from nbtunnel.edge.server import Edge, EdgeConfig
from tests.cloudflare.cfstubs import DnsStub, TestPKI, TlsFront, Zone
from tests.cloudflare.wiretap import Hello, Tap, start_taps

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


REGION1 = ["127.0.0.1", "127.0.0.2"]
REGION2 = ["127.0.0.3", "127.0.0.4"]


@dataclass
class Cloud:
    """Cloudflare played offline: DNS (SRV + A), taps on four edge addresses in two regions,
    nbtunnel's edge behind them with a certificate from the test root, and the quick API
    over HTTPS at api.trycloudflare.com (resolved by the DNS stub)."""

    pki: TestPKI
    edge: Edge
    dns: DnsStub
    taps: list[Tap]
    front: TlsFront
    env: dict[str, str]

    @property
    def api_url(self) -> str:
        return f"https://api.trycloudflare.com:{self.front.port}"

    @property
    def dns_options(self) -> DnsOptions:
        host, port = self.dns.address.split(":")
        return DnsOptions(servers=((host, int(port)),), dot=None)

    def hellos(self) -> list[Hello]:
        return [h for tap in self.taps for h in tap.hellos]

    async def fetch(self, hostname: str, path: str = "/") -> tuple[int, bytes]:
        """GET https://hostname/path through the TLS front (the public side of the edge)."""
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_path))
        async with aiohttp.ClientSession() as s, s.get(
                f"https://127.0.0.1:{self.front.port}{path}", headers={"Host": hostname},
                server_hostname=hostname, ssl=ctx) as resp:
            return resp.status, await resp.read()

    async def fetch_plain(self, hostname: str, path: str = "/") -> tuple[int, bytes]:
        """GET through the edge's plain HTTP front with Host: hostname."""
        host, port = self.edge.public_address
        async with aiohttp.ClientSession() as s, s.get(
                f"http://{host}:{port}{path}", headers={"Host": hostname}) as resp:
            return resp.status, await resp.read()

    async def api(self, method: str, path: str, body: object = None) -> Any:
        """The edge's control API (/api/v1) with the admin token."""
        assert self.edge.store is not None
        token_file, token = await ensure_admin_token(self.edge.store, self.pki.dir)
        token = token or token_file.read_text().strip()
        async with aiohttp.ClientSession() as s, s.request(
                method, f"{self.edge.api_url}/api/v1{path}", json=body,
                headers={"Authorization": f"Bearer {token}"}) as resp:
            doc = await resp.json(content_type=None)
            assert resp.status in (200, 201) and doc["success"], doc
            return doc["result"]


async def start_edge(config: EdgeConfig) -> Edge:
    """An edge on ephemeral ports: its HTTP/2 listener always gets the QUIC port number."""
    edge = Edge(config)
    await edge.start()
    assert edge.http2_address is not None, "the edge serves QUIC only"
    return edge


async def start_cloud(tmp: Path, refuse: frozenset[str] = frozenset()) -> Cloud:
    pki = TestPKI(tmp / "cloud-edge")
    edge = await start_edge(EdgeConfig(state_dir=pki.dir, quic_port=0, http_port=0,
                                       domain="trycloudflare.com", location="tst01"))
    port, taps = await start_taps(REGION1 + REGION2, edge.quic_address, edge.quic_address,
                                  refuse)
    dns = await DnsStub.start(cloudflare_zone(port, REGION1, REGION2))
    front = await TlsFront(pki, edge.public_address).start()
    env = {"NBTUNNEL_DNS": dns.address, "NBTUNNEL_DOT": "off"}
    return Cloud(pki, edge, dns, taps, front, env)


async def stop_cloud(cloud: Cloud) -> None:
    await cloud.front.close()
    for tap in cloud.taps:
        await tap.close()
    cloud.dns.close()
    await cloud.edge.close()
