"""The Python API outside IPython: open/stop, dedupe, context manager, async, config, cleanup."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import aiohttp
import pytest

import nbtunnel
from nbtunnel.api.edges import resolve_edge
from nbtunnel.api.errors import EdgeConfigError
from nbtunnel.api.runtime import current_runtime
from nbtunnel.edge.server import Edge, EdgeConfig
from tests.notebook.nbhelpers import fetch, nbtunnel_threads, wait_until


def test_import_is_cheap() -> None:
    import subprocess
    import sys

    code = ("import sys, nbtunnel; mods = [m for m in ('IPython', 'ipywidgets', 'asyncio', "
            "'nbtunnel.api.tunnel') if m in sys.modules]; print(mods)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_open_fetch_stop(origin_port: int) -> None:
    t = nbtunnel.open_tunnel(origin_port)
    assert t.status == "connected"
    assert t.url.startswith("http://") and t.hostname in t.url
    assert t.service == f"http://localhost:{origin_port}"
    status, body = fetch(t.front[1], t.hostname, "/hello")
    assert (status, body) == (200, "origin says /hello")
    wait_until(lambda: t.stats.requests == 1, what="request counted")
    rec = t.recent[-1]
    assert (rec.method, rec.path, rec.status) == ("GET", "/hello", 200)
    assert t.stats.bytes_out == len(body)
    assert nbtunnel.open_tunnel(str(origin_port)) is t  # same target -> same tunnel
    assert nbtunnel.open_tunnel(f"http://localhost:{origin_port}/") is t
    assert nbtunnel.list_tunnels() == [t]
    t.wait_ready(4, timeout=15)
    conns = t.connections
    assert [c.state for c in conns] == ["registered"] * 4
    assert all(c.location == "LOC" and c.protocol == "quic" and c.connection_id for c in conns)
    t.stop()
    assert t.status == "stopped" and nbtunnel.list_tunnels() == []
    assert fetch(t.front[1], t.hostname)[0] in (404, 530)
    t.stop()  # idempotent


def test_context_manager_and_stop_all_leaves_nothing() -> None:
    with nbtunnel.open_tunnel("http_status:418") as t:
        assert fetch(t.front[1], t.hostname)[0] == 418
    assert t.status == "stopped"
    rt = current_runtime()
    assert rt is not None and "nbtunnel-loop" in nbtunnel_threads()
    front = t.front
    nbtunnel.stop_all()
    assert current_runtime() is None and nbtunnel_threads() == []
    with socket.socket() as s:  # the embedded edge's front port is free again
        # SO_REUSEADDR: the edge closes first after `Connection: close` (RFC 9112 9.6), which
        # may leave TIME_WAIT; a listener still open would fail this bind all the same
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(front)


def test_bad_targets() -> None:
    for bad in ("", "http://localhost:80/path", "http_status:abc", 70000, "localhost:x:y"):
        with pytest.raises(nbtunnel.TargetError):
            nbtunnel.open_tunnel(bad)
    assert current_runtime() is None  # nothing was started for a bad target


def test_resolve_edge_sources(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (resolve_edge().kind, resolve_edge().source) == ("local", "NBTUNNEL_EDGE")
    monkeypatch.delenv("NBTUNNEL_EDGE")
    assert (resolve_edge().kind, resolve_edge().source) == ("auto", "default")
    assert resolve_edge("Cloudflare").kind == "cloudflare"
    assert resolve_edge("cloudflare", region="us").region == "us"
    assert resolve_edge("local").kind == "local"
    with pytest.raises(EdgeConfigError, match="no CA"):
        resolve_edge("10.0.0.1:7844")
    ca = isolated / "ca.pem"
    isolated.mkdir(parents=True, exist_ok=True)
    ca.write_text("x")
    (isolated / "config.json").write_text(json.dumps({"edge": "10.0.0.2:7000",
                                                      "cacert": str(ca)}))
    s = resolve_edge()
    assert (s.edge, s.cacert, s.quick_service) == (("10.0.0.2", 7000), str(ca),
                                                   "http://10.0.0.2:8080")
    monkeypatch.setenv("NBTUNNEL_EDGE", "10.0.0.3:7844")
    assert resolve_edge().edge == ("10.0.0.3", 7844) and resolve_edge().source == "NBTUNNEL_EDGE"
    assert resolve_edge("10.0.0.4:1").edge == ("10.0.0.4", 1)


def test_unreachable_edge_times_out(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(nbtunnel.TunnelError, match="quick tunnel"):
        nbtunnel.open_tunnel(8000, edge=f"127.0.0.1:{port}", cacert=str(tmp_path / "x"),
                             quick_service="http://127.0.0.1:9", timeout=3)
    assert nbtunnel.list_tunnels() == []


async def test_async_open_against_a_configured_edge(tmp_path: Path) -> None:
    async with Edge(EdgeConfig(state_dir=tmp_path / "edge", quic_port=0, http_port=0)) as e:
        t = await nbtunnel.aopen_tunnel(
            "hello_world", edge=f"127.0.0.1:{e.quic_address[1]}", cacert=str(e.ca_path),
            quick_service=e.api_url, ha_connections=2)
        assert "from argument" in t.edge_label
        async with aiohttp.ClientSession() as s:
            async with s.get(e.api_url + "/", headers={"Host": t.hostname}) as r:
                assert r.status == 200
        async with t:
            pass
        assert t.status == "stopped"
    assert threading.current_thread().name == "MainThread"
