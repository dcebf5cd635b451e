"""The real cloudflared runs a named tunnel made by `nbtunnel tunnel create` against our edge,
from the credentials file and from the token, with a two-hostname config.yml."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import aiohttp
import pytest

from nbtunnel.cli import main
from nbtunnel.edge.bootstrap import ensure_admin_token
from nbtunnel.edge.server import Edge
from tests.e2e.conftest import Origin

CLOUDFLARED = os.environ.get("NBTUNNEL_CLOUDFLARED")
pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not CLOUDFLARED, reason="set NBTUNNEL_CLOUDFLARED to a cloudflared binary"),
]


async def _run_cloudflared(edge: Edge, config: Path, extra: list[str], home: Path,
                           client: aiohttp.ClientSession) -> None:
    assert CLOUDFLARED is not None
    proc = await asyncio.create_subprocess_exec(
        CLOUDFLARED, "tunnel", "--config", str(config), "run", *extra,
        env={**os.environ, "HOME": str(home)}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    log: list[str] = []
    try:
        try:
            async with asyncio.timeout(30):
                while True:
                    line = (await proc.stdout.readline()).decode(errors="replace")
                    assert line, "cloudflared exited:\n" + "".join(log)
                    log.append(line)
                    if "Registered tunnel connection" in line:
                        break
        except TimeoutError:
            raise AssertionError("cloudflared did not register:\n" + "".join(log)) from None
        host, port = edge.public_address
        base = f"http://{host}:{port}"
        async with client.post(f"{base}/echo/a", data=b"hi",
                               headers={"Host": "a.example.com"}) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["body"] == "hi"
        async with client.get(f"{base}/", headers={"Host": "b.example.com"}) as resp:
            assert resp.status == 418
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)


async def test_cloudflared_runs_nbtunnel_named_tunnel(
        edge: Edge, origin: Origin, client: aiohttp.ClientSession, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert edge.store is not None
    _, token = await ensure_admin_token(edge.store, tmp_path / "edge")
    assert token is not None
    home = tmp_path / "home"
    monkeypatch.setenv("NBTUNNEL_HOME", str(home))
    monkeypatch.setenv("NBTUNNEL_API", edge.api_url)
    monkeypatch.setenv("NBTUNNEL_API_TOKEN", token)
    creds_file = tmp_path / "creds.json"
    assert await asyncio.to_thread(main, ["tunnel", "create", "--credentials-file",
                                          str(creds_file), "interop"]) == 0
    for host in ("a.example.com", "b.example.com"):
        assert await asyncio.to_thread(main, ["tunnel", "route", "dns", "interop", host]) == 0
    tid = re.search(r'"TunnelID": "([^"]+)"', creds_file.read_text())
    assert tid is not None
    qh, qp = edge.quic_address
    config = tmp_path / "config.yml"
    config.write_text(
        f"tunnel: {tid.group(1)}\ncredentials-file: {creds_file}\nedge: [{qh}:{qp}]\n"
        f"cacert: {edge.ca_path}\nprotocol: quic\nno-autoupdate: true\nno-prechecks: true\n"
        f"metrics: 127.0.0.1:0\nha-connections: 2\ngrace-period: 2s\ningress:\n"
        f"  - hostname: a.example.com\n    service: {origin.url}\n"
        f"  - hostname: b.example.com\n    service: http_status:418\n"
        f"  - service: http_status:404\n")
    await _run_cloudflared(edge, config, [], tmp_path, client)
    from nbtunnel.cli.apiclient import ApiClient, load_login

    tunnel_token = (await asyncio.to_thread(ApiClient(load_login()).call, "GET",
                                            f"/tunnels/{tid.group(1)}/token"))["token"]
    config.write_text(config.read_text().replace(f"credentials-file: {creds_file}\n", ""))
    await _run_cloudflared(edge, config, ["--token", tunnel_token], tmp_path, client)
