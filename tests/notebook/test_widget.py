"""The status widget, headless (no kernel: ipywidgets uses a dummy comm).

Its traits must follow connector events: connect, reconnect after the edge restarts, stop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiohttp

import nbtunnel
from nbtunnel.edge.server import Edge, EdgeConfig
from nbtunnel.notebook.widget import TunnelWidget, tunnel_widget, widget_bundle


async def eventually(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # noqa: ASYNC110 - polling traits set from another thread
            await asyncio.sleep(0.02)


async def test_widget_follows_connect_requests_reconnect_and_stop(tmp_path: Path) -> None:
    cfg = EdgeConfig(state_dir=tmp_path / "edge", quic_port=0, http_port=0)
    edge = Edge(cfg)
    await edge.start()
    quic_port, http_port = edge.quic_address[1], edge.public_address[1]
    try:
        t = await nbtunnel.aopen_tunnel("hello_world", edge=f"127.0.0.1:{quic_port}",
                                        cacert=str(edge.ca_path), quick_service=edge.api_url,
                                        ha_connections=2)
        w = TunnelWidget(t)
        assert w.url == t.url and w.url in w.header.value
        await eventually(lambda: w.connection_states == ["registered", "registered"])
        assert w.status == "connected" and "registered" in w.conn_table.value

        async with aiohttp.ClientSession() as s:
            for path in ("/", "/uptime"):
                async with s.get(f"{edge.api_url}{path}", headers={"Host": t.hostname}) as r:
                    assert r.status == 200
                    await r.read()
        await eventually(lambda: w.requests == 2)
        assert w.bytes_out > 0 and w.errors == 0
        assert "/uptime" in w.recent_table.value

        await edge.close()  # the edge goes away: every connection retries
        await eventually(lambda: w.status == "reconnecting")
        assert "reconnecting" in w.connection_states

        edge = Edge(EdgeConfig(state_dir=cfg.state_dir, quic_port=quic_port,
                               http_port=http_port))
        await edge.start()  # same ports, same store: the quick tunnel's credentials still work
        await eventually(lambda: w.connection_states == ["registered", "registered"], 40)
        assert w.status == "connected"

        w.stop_button.click()  # the handler only schedules the stop on the loop thread
        assert w.stop_button.disabled
        await eventually(lambda: w.status == "stopped")
        assert t.status == "stopped" and w.stop_button.description == "Stopped"
        assert set(w.connection_states) == {"closed"}
    finally:
        await edge.close()


def test_one_widget_per_tunnel_and_bundle() -> None:
    t = nbtunnel.open_tunnel("http_status:204")
    w = tunnel_widget(t)
    assert tunnel_widget(t) is w
    bundle = widget_bundle(t)
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == w.model_id
    t.stop()
    assert w.status == "stopped"


def test_panel_says_when_the_kernel_went_silent_and_shows_reach() -> None:
    """The alive element is re-sent by the loop thread; its CSS shows the stale banner only if
    the next one does not come (a restarted kernel cannot update the old panel)."""
    from nbtunnel.notebook.widget import BEAT, STALE_AFTER

    assert STALE_AFTER >= 2 * BEAT  # two beats may be late before the banner shows
    t = nbtunnel.open_tunnel("http_status:204", ha_connections=1, auth="token")
    w = tunnel_widget(t)
    t._runtime.call(asyncio.sleep(0))  # runs after the first beat, queued before it (FIFO)
    alive = w.alive.value
    assert f"animation:nbtunnel-stale 0s {STALE_AFTER}s forwards" in alive
    assert "No word from the kernel" in alive and "visibility:hidden" in alive
    assert "local only" in w.header.value and "--auth token" in w.header.value
    assert "refused by --auth <b>0</b>" in w.counters.value
    t.stop()
    assert w.alive.value == ""  # a stopped tunnel's panel is final, not stale
