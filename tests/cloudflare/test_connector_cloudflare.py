"""The connector on "Cloudflare" (offline): discovery -> quick API -> TLS -> registration,
asserted on the wire by taps in front of the edge addresses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from pathlib import Path

import pytest

from nbtunnel.connector.cloudflare import CloudflareOptions, find_edge, open_quick
from nbtunnel.connector.edgepool import EdgePool
from nbtunnel.connector.ingress import Ingress
from nbtunnel.connector.supervisor import Connector, ConnectorConfig
from nbtunnel.core.credentials import Credentials
from tests.cloudflare.cfcloud import REGION1, REGION2, Cloud, start_cloud, stop_cloud
from tests.e2e.conftest import FAST_HA_START, Origin

X25519MLKEM768 = 0x11EC


async def _serve(connector: Connector, n: int) -> asyncio.Task[None]:
    task = asyncio.create_task(connector.run())
    async with asyncio.timeout(30):
        await connector.wait_ready(n)
    return task


async def _stop(connector: Connector, task: asyncio.Task[None]) -> None:
    await connector.shutdown(grace=1)
    with contextlib.suppress(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("protocol", ["quic", "http2"])
async def test_quick_tunnel_uses_one_connection_with_cloudflares_names(
        cloud: Cloud, origin: Origin, protocol: str) -> None:
    options = CloudflareOptions(cacert=str(cloud.pki.ca_path), quick_service=cloud.api_url,
                                dns=cloud.dns_options)
    edge, quick = await open_quick(options)
    assert quick.url.startswith("https://") and quick.hostname.endswith(".trycloudflare.com")
    assert cloud.front.sni == ["api.trycloudflare.com"]
    connector = Connector(ConnectorConfig(
        edge=[], credentials=quick.credentials, ingress=Ingress.single(origin.url),
        pool=edge.pool, trust=edge.trust, ha_connections=1, protocol=protocol))
    task = await _serve(connector, 1)
    try:
        status, body = await cloud.fetch(quick.hostname, "/echo")
        assert status == 200 and json.loads(body)["path"] == "/echo"
    finally:
        await _stop(connector, task)
    hellos = cloud.hellos()
    assert len(hellos) == 1, hellos  # one connection, one address
    hello = hellos[0]
    if protocol == "quic":
        assert (hello.transport, hello.server_name, hello.alpn) == (
            "quic", "quic.cftunnel.com", ["argotunnel"]), [t.errors for t in cloud.taps]
        assert X25519MLKEM768 in hello.key_share_groups
        assert hello.first_datagram >= 1200
    else:
        assert (hello.transport, hello.server_name, hello.alpn) == ("tcp", "h2.cftunnel.com", [])


async def test_named_tunnel_four_connections_over_two_regions_remote_config(
        cloud: Cloud, origin: Origin) -> None:
    """A token-run named tunnel: no quick API, four connections spread over both regions,
    ingress pushed by the edge; management.argotunnel.com never reaches the origin."""
    tunnel = await cloud.api("POST", "/tunnels", {"name": "web"})
    creds = Credentials.from_token(tunnel["token"])
    tid = tunnel["id"]
    for host in ("app.example.com", "management.argotunnel.com"):
        await cloud.api("POST", "/routes", {"hostname": host, "tunnel_id": tid})
    await cloud.api("PUT", f"/tunnels/{tid}/configurations", {"config": {"ingress": [
        {"hostname": "app.example.com", "service": origin.url},
        {"service": origin.url}]}})
    edge = await find_edge(CloudflareOptions(cacert=str(cloud.pki.ca_path),
                                             dns=cloud.dns_options))
    connector = Connector(ConnectorConfig(
        edge=[], credentials=creds, ingress=Ingress.single("http_status:503"),
        pool=edge.pool, trust=edge.trust, ha_connections=4, ha_start_delay=FAST_HA_START))
    task = await _serve(connector, 4)
    try:
        used = sorted(h.address for h in cloud.hellos())
        async with asyncio.timeout(10):
            while connector.config_version < 1:  # noqa: ASYNC110 - the edge pushes it
                await asyncio.sleep(0.01)
        status, body = await cloud.fetch_plain("app.example.com", "/echo")
        assert status == 200 and json.loads(body)["path"] == "/echo"
        seen = len(origin.holds), len(origin.uploads)
        status, body = await cloud.fetch_plain("management.argotunnel.com", "/echo")
        assert status == 404 and b"/echo" not in body  # the connector answered, not the origin
        assert (len(origin.holds), len(origin.uploads)) == seen
    finally:
        await _stop(connector, task)
    assert used == sorted(REGION1 + REGION2)  # one connection per address, both regions


async def test_ha_count_is_capped_by_addresses(cloud: Cloud, origin: Origin,
                                               caplog: pytest.LogCaptureFixture) -> None:
    options = CloudflareOptions(cacert=str(cloud.pki.ca_path), quick_service=cloud.api_url,
                                dns=cloud.dns_options)
    edge, quick = await open_quick(options)
    connector = Connector(ConnectorConfig(
        edge=[], credentials=quick.credentials, ingress=Ingress.single(origin.url),
        pool=edge.pool, trust=edge.trust, ha_connections=6, protocol="http2",
        ha_start_delay=FAST_HA_START))
    caplog.set_level("INFO", "nbtunnel.connector")
    task = await _serve(connector, 4)
    try:
        assert "You requested 6 HA connections but I can give you at most 4." in caplog.text
        assert len(connector.connections) == 4
    finally:
        await _stop(connector, task)


@pytest.mark.parametrize("protocol", ["http2", "quic"])
async def test_a_refused_address_rotates_to_the_other_region(
        tmp_path: Path, origin: Origin, caplog: pytest.LogCaptureFixture, protocol: str) -> None:
    """Region 1's addresses do not answer (TCP closed at once, UDP dropped): the connection's
    first address is refused, it rotates to region 2 and registers there."""
    cloud = await start_cloud(tmp_path, refuse=frozenset(REGION1))
    try:
        options = CloudflareOptions(cacert=str(cloud.pki.ca_path),
                                    quick_service=cloud.api_url, dns=cloud.dns_options)
        edge, quick = await open_quick(options)
        # region 1 first (the SRV order is random; this rng keeps region order on a tie)
        pool = EdgePool(sorted(edge.discovery.regions), rng=random.Random(0))
        caplog.set_level("INFO", "nbtunnel.connector")
        connector = Connector(ConnectorConfig(
            edge=[], credentials=quick.credentials, ingress=Ingress.single(origin.url),
            pool=pool, trust=edge.trust, ha_connections=1, protocol=protocol))
        task = await _serve(connector, 1)
        try:
            assert connector.connections[0].target.host in REGION2
        finally:
            await _stop(connector, task)
        refused = [t for t in cloud.taps if t.address in REGION1
                   and (t.tcp_connections or t.udp_packets)]
        assert len(refused) == 1
        assert f"dial failed; edge address {refused[0].address}:" in caplog.text
    finally:
        await stop_cloud(cloud)


async def test_udp_blocked_falls_back_to_http2(cloud: Cloud, origin: Origin,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """UDP to every edge address is dropped (as in many hosted notebooks): with protocol auto
    the QUIC handshake times out and the connection falls back to HTTP/2 over TCP."""
    for tap in cloud.taps:
        tap.drop_udp = True
    options = CloudflareOptions(cacert=str(cloud.pki.ca_path), quick_service=cloud.api_url,
                                dns=cloud.dns_options)
    edge, quick = await open_quick(options)
    caplog.set_level("INFO", "nbtunnel.connector")
    connector = Connector(ConnectorConfig(
        edge=[], credentials=quick.credentials, ingress=Ingress.single(origin.url),
        pool=edge.pool, trust=edge.trust, ha_connections=1, protocol="auto"))
    task = await _serve(connector, 1)
    try:
        assert connector.connections[0].protocol == "http2"
        status, body = await cloud.fetch(quick.hostname, "/echo")
        assert status == 200 and json.loads(body)["path"] == "/echo"
    finally:
        await _stop(connector, task)
    assert sum(t.udp_packets for t in cloud.taps) > 0  # QUIC was tried first
    assert "switching to the fallback protocol http2" in caplog.text
    assert [h.transport for h in cloud.hellos()] == ["tcp"]


@pytest.mark.parametrize("protocol", ["quic", "http2"])
async def test_bundled_roots_alone_are_refused_by_the_test_edge(cloud: Cloud, origin: Origin,
                                                                protocol: str) -> None:
    """Production trust (no --cacert) against the test edge's certificate: every handshake
    fails, and the failure names the roots that were trusted."""
    options = CloudflareOptions(quick_service=cloud.api_url, dns=cloud.dns_options)
    with_root = CloudflareOptions(cacert=str(cloud.pki.ca_path), quick_service=cloud.api_url,
                                  dns=cloud.dns_options)
    edge, quick = await open_quick(with_root)
    connector = Connector(ConnectorConfig(
        edge=[], credentials=quick.credentials, ingress=Ingress.single(origin.url),
        pool=edge.pool, trust=options.trust, ha_connections=1, protocol=protocol))
    failed = asyncio.Event()
    details: list[str] = []

    def watch(event: object) -> None:
        if getattr(event, "state", "") == "reconnecting":
            details.append(str(getattr(event, "detail", "")))
            if "trusted:" in details[-1]:
                failed.set()

    connector.subscribe(watch)
    task = asyncio.create_task(connector.run())
    try:
        async with asyncio.timeout(60):
            await failed.wait()
    finally:
        await _stop(connector, task)
    assert connector.ready_connections == 0
    assert "trusted: Cloudflare's origin CA roots (bundled) and the system store" in details[-1]
    assert "certificate" in details[-1].lower()
