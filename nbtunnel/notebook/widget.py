"""The live status panel (ipywidgets 8): URL, reach, HA connections, counters, last requests,
the request inspector, Stop.

Updates come from `Tunnel.watch`, i.e. on the nbtunnel loop thread, at most every 0.25 s, so a
burst of requests costs one comm message and the connector never waits on the front end
(ipykernel's IOPub is thread-safe). The Stop button may be handled on a kernel subshell thread
(JupyterLab >= 4.4), so its handler only schedules the stop on the loop and returns.

A panel whose kernel restarted (or died) cannot be told so by that kernel, so the panel says it
itself: the loop thread re-sends a small "alive" element every few seconds, whose CSS animation
shows a "no word from the kernel" banner unless it is re-sent in time (no JavaScript needed).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import traitlets

from nbtunnel.api.state import human_bytes
from nbtunnel.api.tunnel import Tunnel
from nbtunnel.notebook.inspector_view import InspectorView

STATE_COLORS = {"registered": "#1a7f37", "connecting": "#9a6700", "reconnecting": "#bc4c00",
                "draining": "#8250df", "closed": "#57606a"}
STATUS_COLORS = {"connected": "#1a7f37", "connecting": "#9a6700", "reconnecting": "#bc4c00",
                 "stopped": "#57606a"}
RECENT_ROWS = 8
BEAT = 5.0  # seconds between "alive" refreshes
STALE_AFTER = 15  # seconds without one before the panel says the kernel is silent
_TABLE = "style='border-collapse:collapse;font-size:12px;margin:2px 0'"
_CELL = "style='padding:1px 8px;text-align:left'"


def _row(cells: list[str], tag: str = "td") -> str:
    return "<tr>" + "".join(f"<{tag} {_CELL}>{c}</{tag}>" for c in cells) + "</tr>"


def _badge(text: str, color: str) -> str:
    return (f"<span class='nbtunnel-state' style='color:white;background:{color};"
            f"border-radius:3px;padding:0 5px'>{html.escape(text)}</span>")


class TunnelWidget(widgets.VBox):
    """One panel per tunnel; the plain traits mirror the tunnel for tests and callers."""

    url = traitlets.Unicode("")
    status = traitlets.Unicode("connecting")
    connection_states = traitlets.List(traitlets.Unicode())
    requests = traitlets.Int(0)
    errors = traitlets.Int(0)
    bytes_in = traitlets.Int(0)
    bytes_out = traitlets.Int(0)
    open_streams = traitlets.Int(0)

    def __init__(self, tunnel: Tunnel, **kwargs: Any) -> None:
        self.tunnel = tunnel
        self.header = widgets.HTML()
        self.conn_table = widgets.HTML()
        self.counters = widgets.HTML()
        self.recent_table = widgets.HTML()
        self.stop_button = widgets.Button(description="Stop", button_style="danger",
                                          icon="stop", tooltip="stop this tunnel")
        self.stop_button.on_click(self._on_stop)
        self.stop_button.add_class("nbtunnel-stop")
        self.alive = widgets.HTML()
        self.alive.add_class("nbtunnel-alive")
        self.inspector = InspectorView(tunnel) if tunnel.options.inspect else None
        parts: list[Any] = [self.alive, self.header, self.conn_table, self.counters,
                            self.recent_table]
        if self.inspector is not None:
            box = widgets.Accordion(children=[self.inspector], titles=("Requests",))
            box.add_class("nbtunnel-inspector-box")
            parts.append(box)
        self._beat_handle: Any = None
        self.on_refresh: Callable[[], None] | None = None
        self._beats = 0
        super().__init__([*parts, self.stop_button], **kwargs)
        self.add_class("nbtunnel-widget")
        self.url = tunnel.url
        self._seen: tuple[int, int] = (-1, -1)
        self._unwatch: Any = lambda: None
        self.refresh(tunnel)
        self._unwatch = tunnel.watch(self.refresh, 0.25)
        if not tunnel._runtime.closed:
            tunnel._runtime.loop.call_soon_threadsafe(self._beat)

    def _beat(self) -> None:
        """Loop thread: re-send the alive element, then again in BEAT s (until stopped)."""
        self._beat_handle = None
        if self.tunnel.status == "stopped" or self.tunnel._runtime.closed:
            self.alive.value = ""
            return
        self._beats += 1
        self.alive.value = (
            f"<style>@keyframes nbtunnel-stale{{to{{visibility:visible}}}}</style>"
            f"<div class='nbtunnel-stale' data-beat='{self._beats}' style='visibility:hidden;"
            f"animation:nbtunnel-stale 0s {STALE_AFTER}s forwards;background:#fff8c5;"
            f"border:1px solid #d4a72c;padding:2px 6px;font-size:12px'>No word from the kernel "
            f"for {STALE_AFTER} s: it restarted, stopped or is unreachable. This panel is a "
            f"snapshot; its Stop does nothing.</div>")
        self._beat_handle = self.tunnel._runtime.loop.call_later(BEAT, self._beat)
    def _on_stop(self, _button: Any = None) -> None:
        # may run on a subshell thread while a cell is busy: schedule, never block
        self.stop_button.disabled = True
        self.stop_button.description = "Stopping..."
        self.tunnel.stop(wait=False)

    def refresh(self, tunnel: Tunnel | None = None) -> None:
        """Re-render from the tunnel's snapshot (loop thread, or any thread in tests)."""
        t = self.tunnel
        conns, stats, status = t.connections, t.stats, t.status
        states = [c.state for c in conns]
        if (t.version, stats.open_streams) == self._seen and self.status == status:
            return
        self._seen = (t.version, stats.open_streams)
        with self.hold_trait_notifications():
            self.status, self.connection_states = status, states
            self.requests, self.errors = stats.requests, stats.errors
            self.bytes_in, self.bytes_out = stats.bytes_in, stats.bytes_out
            self.open_streams = stats.open_streams
        self.header.value = self._header_html(status)
        self.conn_table.value = (
            f"<table {_TABLE} class='nbtunnel-connections'>"
            + _row(["#", "state", "location", "protocol", "edge", "connection"], "th")
            + "".join(_row([str(c.index), _badge(c.state, STATE_COLORS.get(c.state, "#57606a")),
                            html.escape(c.location or "-"), c.protocol, html.escape(c.edge),
                            html.escape(c.connection_id[:8] or c.detail)]) for c in conns)
            + "</table>")
        self.counters.value = (
            f"<span class='nbtunnel-counters'>requests <b>{stats.requests}</b> · errors "
            f"<b>{stats.errors}</b> · in <b>{human_bytes(stats.bytes_in)}</b> · out "
            f"<b>{human_bytes(stats.bytes_out)}</b> · open streams "
            f"<b>{stats.open_streams}</b>"
            + (f" · refused by --auth <b>{t.refused}</b>" if t.auth_kind else "")
            + "</span>")
        recent = t.recent[-RECENT_ROWS:][::-1]
        self.recent_table.value = "" if not recent else (
            f"<table {_TABLE} class='nbtunnel-recent'>"
            + _row(["method", "path", "status", "ms"], "th")
            + "".join(_row([html.escape(r.method), html.escape(r.path[:60]),
                            str(r.status or html.escape(r.error)),
                            f"{r.duration * 1000:.1f}"]) for r in recent)
            + "</table>")
        if self.inspector is not None:
            self.inspector.refresh()
        if self.on_refresh is not None:  # the static copy (snapshot.py), when one is shown
            self.on_refresh()
        if status == "stopped":
            self.stop_button.disabled = True
            self.stop_button.description = "Stopped"
            self.alive.value = ""
            if self._beat_handle is not None:  # refresh runs on the loop thread, as _beat
                self._beat_handle.cancel()
                self._beat_handle = None
            self._unwatch()

    def _header_html(self, status: str) -> str:
        t = self.tunnel
        url = html.escape(t.url)
        copy = ("<button class='nbtunnel-copy' title='copy the URL' "
                f"onclick=\"navigator.clipboard.writeText('{url}')\">Copy</button>")
        extra = "".join(f"<br><small>{html.escape(label)}: <a href='{html.escape(u)}' "
                        f"target='_blank'>{html.escape(u)}</a></small>"
                        for label, u in t.extra_urls.items())
        reach = ("local only: opens on this machine" if t.local_only
                 else "&#127760; public: anyone with the URL can open it")
        auth = {"token": "; --auth token", "basic": "; --auth user:password"}.get(
            t.auth_kind or "", "")
        return (f"<div class='nbtunnel-header'><b>nbtunnel</b> "
                f"<a class='nbtunnel-url' href='{url}' target='_blank' rel='noopener' "
                f"style='color:#0969da;text-decoration:underline'>{url}</a> {copy} "
                f"&rarr; {html.escape(t.service)} "
                f"{_badge(status, STATUS_COLORS.get(status, '#57606a'))}<br>"
                + "".join(f"<a class='nbtunnel-url' href='{html.escape(u)}' target='_blank' "
                          f"rel='noopener' style='color:#0969da;text-decoration:underline'>"
                          f"{html.escape(u)}</a> &rarr; {html.escape(svc)}<br>"
                          for _, u, svc in t.routes[1:]) +
                f"<small class='nbtunnel-reach'>{reach}{auth}; via "
                f"{html.escape(t.edge_label)}</small>"
                + (f"<br><small class='nbtunnel-note'>{html.escape(t.edge_note)}</small>"
                   if t.edge_note else "") + f"{extra}</div>")


def tunnel_widget(tunnel: Tunnel) -> TunnelWidget:
    """The tunnel's panel, created once and reused for every display."""
    w = tunnel._views.get("widget")
    if w is None:
        w = tunnel._views["widget"] = TunnelWidget(tunnel)
    return w


def widget_bundle(tunnel: Tunnel) -> dict[str, Any]:
    """The widget-view part of a mime bundle (text/plain stays the tunnel's own summary)."""
    bundle = tunnel_widget(tunnel)._repr_mimebundle_()
    if not isinstance(bundle, dict):
        return {}
    bundle.pop("text/plain", None)
    return bundle
