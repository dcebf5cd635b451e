"""Named tunnels end to end: CLI against the API, remote configuration reaching a live
connector without reconnecting, and the connector's metrics server."""

from __future__ import annotations

import asyncio
import json
import re
import stat
from pathlib import Path

import aiohttp
import pytest

from nbtunnel.cli import main
from nbtunnel.connector.ingress import Ingress
from nbtunnel.connector.metrics import MetricsServer
from nbtunnel.connector.supervisor import Connector, ConnectorConfig
from nbtunnel.core.credentials import Credentials
from nbtunnel.edge.server import Edge
from nbtunnel.home import read_credentials_file
from tests.control.conftest import Api
from tests.e2e.conftest import FAST_HA_START, Origin


async def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = await asyncio.to_thread(main, list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


async def test_cli_manages_tunnels(cp_edge: Edge, api: Api, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("NBTUNNEL_HOME", str(tmp_path / "home"))
    code, out = await _cli(capsys, "login", "--api", api.base, "--token", api.token)
    assert code == 0 and "as account default" in out
    login = tmp_path / "home" / "login.json"
    assert stat.S_IMODE(login.stat().st_mode) == 0o600 and api.token not in out
    code, out = await _cli(capsys, "tunnel", "create", "web")
    assert code == 0 and "Created tunnel web with id" in out
    tid = re.search(r"Created tunnel web with id (\S+)", out).group(1)  # type: ignore[union-attr]
    cred_file = tmp_path / "home" / f"{tid}.json"
    assert stat.S_IMODE(cred_file.stat().st_mode) == 0o400
    creds = read_credentials_file(cred_file)
    assert set(json.loads(cred_file.read_text())) == {"AccountTag", "TunnelSecret", "TunnelID",
                                                      "Endpoint"}
    code, out = await _cli(capsys, "tunnel", "token", "web")
    assert Credentials.from_token(out.strip()) == creds
    code, out = await _cli(capsys, "tunnel", "route", "dns", "web", "web.example.com")
    assert code == 0 and f"tunnelID={tid}" in out
    code, out = await _cli(capsys, "tunnel", "list")
    assert code == 0 and tid in out and "web" in out
    code, out = await _cli(capsys, "tunnel", "info", "-o", "json", "web")
    assert json.loads(out)["routes"] == ["web.example.com"]
    code, out = await _cli(capsys, "tunnel", "create", "web")
    assert code == 1 and "already exists" in out
    code, out = await _cli(capsys, "tunnel", "cleanup", "web")
    assert code == 0
    code, out = await _cli(capsys, "tunnel", "delete", "web")
    assert code == 0 and "Deleted tunnel web" in out
    code, out = await _cli(capsys, "tunnel", "list", "-d", "-o", "json")
    assert json.loads(out)[0]["deleted_at"]
    monkeypatch.setenv("NBTUNNEL_API_TOKEN", "nbt_bad")
    code, out = await _cli(capsys, "tunnel", "list")
    assert code == 1 and "401" in out


async def _start(edge: Edge, creds: Credentials, ingress: Ingress,
                 ha: int = 2) -> tuple[Connector, asyncio.Task[None]]:
    c = Connector(ConnectorConfig(edge=[edge.quic_address], credentials=creds, ingress=ingress,
                                  cacert=str(edge.ca_path), ha_connections=ha, grace_period=3,
                                  ha_start_delay=FAST_HA_START))
    task = asyncio.get_running_loop().create_task(c.run())
    await asyncio.wait_for(c.wait_ready(ha), 20)
    return c, task


async def test_remote_configuration_reaches_live_connector(
        cp_edge: Edge, api: Api, origin: Origin, client: aiohttp.ClientSession) -> None:
    t = await api.ok("POST", "/tunnels", {"name": "live"})
    await api.ok("POST", "/routes", {"hostname": "live.example.com", "tunnel_id": t["id"]})
    creds = Credentials.from_token(t["token"])
    connector, task = await _start(cp_edge, creds, Ingress.single("http_status:404"))
    metrics = MetricsServer(connector)
    await metrics.start("127.0.0.1", 0)
    mhost, mport = metrics.sockname
    mbase = f"http://{mhost}:{mport}"
    host, port = cp_edge.public_address
    url = f"http://{host}:{port}/echo/x"
    hdr = {"Host": "live.example.com"}
    try:
        before = {c.connection_id for c in cp_edge.registry.connections(creds.tunnel_id)}
        async with client.get(url, headers=hdr) as resp:
            assert resp.status == 404
        good = {"ingress": [{"hostname": "live.example.com", "service": origin.url},
                            {"service": "http_status:404"}]}
        put = await api.ok("PUT", f"/tunnels/{t['id']}/configurations", {"config": good})
        assert put["pushed"][0]["applied_version"] == 1 and not put["pushed"][0]["error"]
        async with client.get(url, headers=hdr) as resp:
            assert resp.status == 200 and (await resp.json())["path"] == "/echo/x"
        bad = {"ingress": [{"hostname": "live.example.com", "service": "ftp://x/y"},
                           {"service": "http_status:404"}]}
        status, doc = await api.call("PUT", f"/tunnels/{t['id']}/configurations",
                                     {"config": bad})
        assert status == 422 and "no path" in doc["errors"][0]["message"]
        async with client.get(url, headers=hdr) as resp:
            assert resp.status == 200  # the old configuration stays
        assert connector.config_version == 1
        after = {c.connection_id for c in cp_edge.registry.connections(creds.tunnel_id)}
        assert after == before  # no reconnect
        got = await api.ok("GET", f"/tunnels/{t['id']}/configurations")
        assert got["version"] == 1 and got["config"] == good
        local = got["local"][str(connector.connector_id)]
        assert local["ingress"][0]["service"] == "http_status:404"
        info = await api.ok("GET", f"/tunnels/{t['id']}")
        assert len(info["connections"]) == 2 and info["status"] == "healthy"
        assert {c["conn_index"] for c in info["connections"]} == {0, 1}
        status, doc = await api.call("DELETE", f"/tunnels/{t['id']}")
        assert status == 409 and "active connection" in doc["errors"][0]["message"]
        # metrics server
        async with client.get(f"{mbase}/ready") as resp:
            assert resp.status == 200
            assert await resp.json() == {"status": 200, "readyConnections": 2,
                                         "connectorId": str(connector.connector_id)}
        async with client.get(f"{mbase}/healthcheck") as resp:
            assert await resp.text() == "OK\n"
        async with client.get(f"{mbase}/config") as resp:
            doc = await resp.json()
            assert doc["version"] == 1 and doc["config"]["ingress"][0]["service"] == origin.url
        async with client.get(f"{mbase}/quicktunnel") as resp:
            assert await resp.json() == {"hostname": ""}
        async with client.get(f"{mbase}/diag/tunnel") as resp:
            diag = await resp.json()
            assert diag["tunnelID"] == t["id"] and len(diag["connections"]) == 2
        async with client.get(f"{mbase}/metrics") as resp:
            text = await resp.text()
        names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
        vector = Path(__file__).parent.parent / "vectors" / "metrics-names.txt"
        cloudflared = {line.split()[0] for line in vector.read_text().splitlines() if line}
        assert {"cloudflared_tunnel_ha_connections", "cloudflared_tunnel_total_requests",
                "cloudflared_orchestration_config_version"} <= names
        assert names <= cloudflared  # only cloudflared's names
        assert "cloudflared_tunnel_ha_connections 2" in text
        assert "cloudflared_orchestration_config_version 1" in text
        # a forced delete closes the connections; the connector's retries are then refused
        await api.ok("DELETE", f"/tunnels/{t['id']}", query={"force": "true"})
    finally:
        await metrics.close()
        await connector.shutdown(grace=1)
        await asyncio.wait_for(task, 10)


async def test_new_connection_gets_stored_configuration(
        cp_edge: Edge, api: Api, origin: Origin, client: aiohttp.ClientSession) -> None:
    t = await api.ok("POST", "/tunnels", {"name": "later"})
    await api.ok("POST", "/routes", {"hostname": "later.example.com", "tunnel_id": t["id"]})
    cfg = {"ingress": [{"service": origin.url}]}
    await api.ok("PUT", f"/tunnels/{t['id']}/configurations", {"config": cfg})
    connector, task = await _start(cp_edge, Credentials.from_token(t["token"]),
                                   Ingress.single("http_status:404"), ha=1)
    try:
        async with asyncio.timeout(5):
            while connector.config_version != 1:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        host, port = cp_edge.public_address
        async with client.get(f"http://{host}:{port}/echo/",
                              headers={"Host": "later.example.com"}) as resp:
            assert resp.status == 200
    finally:
        await connector.shutdown(grace=1)
        await asyncio.wait_for(task, 10)


