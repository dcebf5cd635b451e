"""`nbtunnel tunnel --edge cloudflare --url ...` and `tunnel run --token ...` end to end,
offline: discovery -> quick API -> TLS -> registration against Cloudflare played on
127.0.0.1, in a real subprocess; and the default `auto` falling back to a local edge."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.cloudflare.cfcloud import Cloud
from tests.cloudflare.cfstubs import DnsStub
from tests.e2e.conftest import Origin


async def _spawn(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NBTUNNEL_")}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nbtunnel", *args, env={**clean, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)


class Output:
    """Lines a process printed, read until a pattern shows up."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def until(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = (await self.proc.stdout.readline()).decode()
                    if not line:
                        raise AssertionError(f"process ended before {pattern!r}:\n"
                                             + "".join(self.lines))
                    self.lines.append(line)
                    if m := re.search(pattern, line):
                        return m
        except TimeoutError:
            raise AssertionError(f"no {pattern!r} within {timeout}s:\n"
                                 + "".join(self.lines)) from None

    async def stop(self) -> int:
        """SIGTERM (a graceful stop), then the rest of the output; the exit code."""
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(self.proc.stdout.read(), 30)
        self.lines += rest.decode().splitlines(keepends=True)
        return await asyncio.wait_for(self.proc.wait(), 30)


@pytest.mark.parametrize("protocol", ["quic", "http2"])
async def test_cli_quick_tunnel_on_cloudflare(cloud: Cloud, origin: Origin, tmp_path: Path,
                                              protocol: str) -> None:
    out = Output(await _spawn(
        "tunnel", "--edge", "cloudflare", "--url", origin.url, "--protocol", protocol,
        "--cacert", str(cloud.pki.ca_path), "--quick-service", cloud.api_url,
        "--metrics", "127.0.0.1:0",
        env={**cloud.env, "NBTUNNEL_HOME": str(tmp_path)}))
    try:
        url = (await out.until(r"\|\s+(https://[a-z0-9-]+\.trycloudflare\.com)\s+\|")).group(1)
        assert any("it may take some time to be reachable" in line for line in out.lines)
        await out.until(r"this URL is public: anyone who has it can reach your service")
        metrics = (await out.until(r"Starting metrics server on (\S+)/metrics")).group(1)
        await out.until(rf"Registered tunnel connection connIndex=0 .*protocol={protocol}")
        hostname = url.removeprefix("https://")
        status, body = await cloud.fetch(hostname, "/echo")
        assert status == 200 and json.loads(body)["path"] == "/echo"
        async with aiohttp.ClientSession() as s, s.get(f"http://{metrics}/quicktunnel") as r:
            assert (await r.json())["hostname"] == hostname
    finally:
        assert await out.stop() == 0
    hellos = cloud.hellos()
    assert len(hellos) == 1  # a quick tunnel: ONE connection
    expected = ("quic.cftunnel.com", ["argotunnel"]) if protocol == "quic" else (
        "h2.cftunnel.com", [])
    assert (hellos[0].server_name, hellos[0].alpn) == expected
    assert ("_v2-origintunneld._tcp.argotunnel.com.", "SRV") in cloud.dns.queries
    assert cloud.front.sni[0] == "api.trycloudflare.com"


async def test_cli_named_tunnel_with_token_on_cloudflare(cloud: Cloud, origin: Origin,
                                                         tmp_path: Path) -> None:
    """`tunnel run --token` with no edge flag goes to Cloudflare (no local edge set up here):
    four connections over both regions, ingress pushed by the edge."""
    tunnel = await cloud.api("POST", "/tunnels", {"name": "app"})
    tid = tunnel["id"]
    await cloud.api("POST", "/routes", {"hostname": "app.example.com", "tunnel_id": tid})
    await cloud.api("PUT", f"/tunnels/{tid}/configurations", {"config": {"ingress": [
        {"hostname": "app.example.com", "service": origin.url},
        {"service": "http_status:404"}]}})
    out = Output(await _spawn(
        "tunnel", "run", "--token", tunnel["token"], "--cacert", str(cloud.pki.ca_path),
        env={**cloud.env, "NBTUNNEL_HOME": str(tmp_path)}))
    try:
        await out.until(r"Edge discovery: Cloudflare's edge")
        await out.until(r"Registered tunnel connection connIndex=3")
        assert any("Updated to new configuration version=1" in line for line in out.lines)
        assert sum("Registered tunnel connection" in line for line in out.lines) == 4
        status, body = await cloud.fetch_plain("app.example.com", "/echo")
        assert status == 200 and json.loads(body)["path"] == "/echo"
    finally:
        assert await out.stop() == 0
    assert sorted(h.address for h in cloud.hellos()) == [
        "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]


async def test_cli_config_file_flags_are_honoured(cloud: Cloud, origin: Origin,
                                                  tmp_path: Path) -> None:
    """cloudflared parity: config.yml's protocol, ha-connections and grace-period apply when
    the command line does not set them (they used to lose to the parser's defaults)."""
    tunnel = await cloud.api("POST", "/tunnels", {"name": "cfg"})
    config = tmp_path / "config.yml"
    config.write_text(f"edge: cloudflare\nprotocol: http2\nha-connections: 2\n"
                      f"grace-period: 1s\ncacert: {cloud.pki.ca_path}\n"
                      f"ingress:\n  - service: {origin.url}\n")
    out = Output(await _spawn(
        "tunnel", "--config", str(config), "run", "--token", tunnel["token"],
        env={**cloud.env, "NBTUNNEL_HOME": str(tmp_path)}))
    try:
        await out.until(r"Registered tunnel connection connIndex=1 .*protocol=http2")
    finally:
        assert await out.stop() == 0
    assert any("grace period 1s" in line for line in out.lines), out.lines
    assert len(cloud.hellos()) == 2 and all(h.transport == "tcp" for h in cloud.hellos())


async def test_run_accepts_protocol_and_one_address_keeps_several(
        cloud: Cloud, origin: Origin, tmp_path: Path) -> None:
    """`run --protocol` is accepted (cloudflared does); toward one self-hosted address the
    connector keeps several connections and says so."""
    tunnel = await cloud.api("POST", "/tunnels", {"name": "one"})
    host, port = cloud.edge.quic_address
    out = Output(await _spawn(
        "tunnel", "run", "--token", tunnel["token"], "--protocol", "http2",
        "--edge", f"{host}:{port}", "--cacert", str(cloud.pki.ca_path), "--url", origin.url,
        env={"NBTUNNEL_HOME": str(tmp_path)}))
    try:
        await out.until(r"You requested 4 HA connections and gave 1 edge address")
        await out.until(r"Registered tunnel connection connIndex=3 .*protocol=http2")
    finally:
        assert await out.stop() == 0


async def test_auto_falls_back_to_a_local_edge_with_one_line(tmp_path: Path) -> None:
    """No edge configured and Cloudflare unreachable (the resolver refuses): one line saying
    why, then a local edge serving as before."""
    stub = await DnsStub.start({})
    stub.refuse = True
    out = Output(await _spawn(
        "tunnel", "--url", "hello_world", "--http-port", "0",
        env={"NBTUNNEL_HOME": str(tmp_path), "NBTUNNEL_DNS": stub.address,
             "NBTUNNEL_DOT": "off"}))
    try:
        url = (await out.until(r"\|\s+(http://\S+\.localhost:\d+)\s+\|", timeout=15)).group(1)
        await out.until(r"Registered tunnel connection connIndex=0")
        notes = [line for line in out.lines if "Cloudflare's edge is not reachable" in line]
        assert len(notes) == 1, out.lines
        assert "REFUSED" in notes[0] and "started a local edge" in notes[0]
        assert any("this URL is local" in line for line in out.lines)
        host = url.split("//")[1].split(":")[0]
        port = url.rsplit(":", 1)[1]
        async with aiohttp.ClientSession() as s, s.get(
                f"http://127.0.0.1:{port}/", headers={"Host": host}) as resp:
            assert resp.status == 200
    finally:
        assert await out.stop() == 0
        stub.close()


async def test_cloudflare_unreachable_is_one_error_line(tmp_path: Path) -> None:
    stub = await DnsStub.start({})
    out = Output(await _spawn(
        "tunnel", "--edge", "cloudflare", "--url", "8000",
        env={"NBTUNNEL_HOME": str(tmp_path), "NBTUNNEL_DNS": stub.address,
             "NBTUNNEL_DOT": "off"}))
    try:
        assert await asyncio.wait_for(out.proc.wait(), 30) == 1
        assert out.proc.stdout is not None
        text = (await out.proc.stdout.read()).decode()
    finally:
        stub.close()
    errors = [line for line in text.splitlines() if " ERR " in line]
    assert len(errors) == 1, text
    assert "cannot use Cloudflare's edge: DNS lookup of _v2-origintunneld._tcp.argotunnel.com "\
           "failed" in errors[0] and "NXDOMAIN" in errors[0]
