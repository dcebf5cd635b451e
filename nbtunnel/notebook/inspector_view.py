"""The panel's request inspector: the last requests in a list; pick one to see its headers and
the first KiBs of its bodies (secrets masked, binary as hex); Replay sends it to the origin
again and shows the new response beside the old one.

Like the rest of the panel it is refreshed from the nbtunnel loop thread. Button and list
handlers may run on a kernel subshell thread: they only read snapshots or schedule work on the
loop (`call_soon_threadsafe`), never block.
"""

from __future__ import annotations

import html
import time
from typing import Any

import ipywidgets as widgets

from nbtunnel.api.errors import TunnelError
from nbtunnel.api.state import human_bytes
from nbtunnel.api.tunnel import Tunnel
from nbtunnel.connector.inspector import Capture

LIST_ROWS = 50
_PRE = ("style='white-space:pre-wrap;word-break:break-all;max-height:16em;overflow:auto;"
        "background:#f6f8fa;padding:4px;margin:2px 0;font-size:11px'")


def label(c: Capture) -> str:
    status = str(c.status) if c.status else "error"
    when = time.strftime("%H:%M:%S", time.localtime(c.time))
    again = f"  (replay of #{c.replay_of})" if c.replay_of else ""
    return (f"#{c.id} {when} {c.method} {c.target[:70]} -> {status} "
            f"{c.duration * 1000:.0f} ms {human_bytes(c.response_size)}{again}")


def _headers(headers: list[tuple[str, str]]) -> str:
    return "<br>".join(f"<b>{html.escape(k)}</b>: {html.escape(v)}" for k, v in headers)


def _request_html(c: Capture) -> str:
    body = f"<pre {_PRE}>{html.escape(c.request_text())}</pre>" if c.request_size else ""
    return (f"<div class='nbtunnel-request'><b>{html.escape(c.method)} "
            f"{html.escape(c.target)}</b> <small>({human_bytes(c.request_size)})</small><br>"
            f"<small>{_headers(c.request_headers)}</small>{body}</div>")


def _response_html(c: Capture, title: str) -> str:
    if c.error and not c.status:
        return (f"<div class='nbtunnel-response'><b>{title}</b><br>"
                f"<span style='color:#cf222e'>{html.escape(c.error)}</span></div>")
    if c.streamed:
        body = "<i>stream (SSE or WebSocket): body not kept</i>"
    else:
        body = f"<pre {_PRE}>{html.escape(c.response_text())}</pre>" if c.response_size else ""
    error = f"<br><span style='color:#cf222e'>{html.escape(c.error)}</span>" if c.error else ""
    return (f"<div class='nbtunnel-response'><b>{title}: {c.status}</b> <small>"
            f"({human_bytes(c.response_size)}, {c.duration * 1000:.1f} ms)</small>{error}<br>"
            f"<small>{_headers(c.response_headers)}</small>{body}</div>")


def details_html(c: Capture, replay: Capture | str | None) -> str:
    cols = [_request_html(c), _response_html(c, "Response")]
    if isinstance(replay, Capture):
        cols.append(_response_html(replay, f"Replay #{replay.id}"))
    elif isinstance(replay, str):
        cols.append(f"<div class='nbtunnel-response'><b>Replay</b><br>{html.escape(replay)}"
                    "</div>")
    cells = "".join(f"<td style='vertical-align:top;padding:0 8px;width:{100 // len(cols)}%'>"
                    f"{col}</td>" for col in cols)
    return f"<table class='nbtunnel-details' style='width:100%;font-size:12px'><tr>{cells}</tr>" \
           "</table>"


class InspectorView(widgets.VBox):
    """The list, the details of the selected request, and Replay."""

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel
        self.list = widgets.Select(options=[], rows=8, layout=widgets.Layout(width="100%"))
        self.list.add_class("nbtunnel-requests")
        self.details = widgets.HTML()
        self.details.add_class("nbtunnel-inspect")
        self.replay_button = widgets.Button(description="Replay", icon="repeat", disabled=True,
                                            tooltip="send this request to the origin again")
        self.replay_button.add_class("nbtunnel-replay")
        self.replay_button.on_click(self._on_replay)
        self.list.observe(self._on_select, "value")
        self._last: int | None = None
        self._quiet = False
        self._replays: dict[int, Capture | str] = {}
        super().__init__([self.list, self.replay_button, self.details])
        self.add_class("nbtunnel-inspector")

    def refresh(self) -> None:
        caps = self.tunnel.requests[-LIST_ROWS:]
        last = caps[-1].id if caps else None
        if last == self._last:
            return
        self._last = last
        keep = self.list.value
        self._quiet = True  # setting options selects the first row: not a user's choice
        try:
            self.list.options = [(label(c), c.id) for c in reversed(caps)]
            # new rows must not move (or make) the selection
            self.list.value = keep if any(c.id == keep for c in caps) else None
        finally:
            self._quiet = False

    def _capture(self, capture_id: int | None) -> Capture | None:
        return next((c for c in self.tunnel.requests if c.id == capture_id), None)

    def _on_select(self, change: Any = None) -> None:
        if self._quiet:
            return
        c = self._capture(self.list.value)
        self.replay_button.disabled = c is None or not c.replayable
        self.details.value = "" if c is None else details_html(c, self._replays.get(c.id))

    def _on_replay(self, _button: Any = None) -> None:
        c = self._capture(self.list.value)
        if c is None:
            return
        self.replay_button.disabled = True
        rt = self.tunnel._runtime
        rt.loop.call_soon_threadsafe(lambda: rt.spawn(self._replay(c)))

    async def _replay(self, c: Capture) -> None:
        try:
            self._replays[c.id] = await self.tunnel.areplay(c.id)
        except TunnelError as exc:
            self._replays[c.id] = str(exc)
        self.refresh()
        if self.list.value == c.id:
            self.details.value = details_html(c, self._replays[c.id])
        self.replay_button.disabled = not c.replayable
