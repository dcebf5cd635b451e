"""A static copy of the panel, so a notebook reopened without its kernel still shows it.

A widget needs its kernel: reopened later, JupyterLab shows "Loading widget..." where it was.
So the panel is displayed as two outputs: this HTML snapshot (kept up to date with
`update_display` on every refresh, so the saved notebook holds the last state) and the live
widget. CSS in the snapshot shows exactly one of them: the live widget once it has rendered,
else the snapshot (and never the widget's placeholder). Viewers without CSS `:has()` or
without widgets (nbconvert, GitHub) show the snapshot.
"""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING, Any

from IPython.display import display, update_display

if TYPE_CHECKING:  # pragma: no cover
    from nbtunnel.api.tunnel import Tunnel
    from nbtunnel.notebook.widget import TunnelWidget


def snapshot_id(tunnel: Tunnel) -> str:
    return "nbtunnel-snap-" + "".join(c if c.isalnum() else "-" for c in tunnel.hostname)


def snapshot_html(w: TunnelWidget) -> str:
    sid = snapshot_id(w.tunnel)
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    style = (f"<style>.jp-OutputArea-child:has(.{sid}):has(+ .jp-OutputArea-child "
             f".nbtunnel-widget){{display:none}}.jp-OutputArea-child:has(.{sid}) + "
             f".jp-OutputArea-child:not(:has(.nbtunnel-widget)){{display:none}}</style>")
    return (f"{style}<div class='nbtunnel-snapshot {sid}' style='opacity:.75'>"
            f"<small style='color:#57606a'>nbtunnel panel as of {html.escape(when)} (a static "
            f"copy: the live panel needs this notebook's kernel)</small>"
            f"{w.header.value}{w.conn_table.value}{w.counters.value}</div>")


def show_panel(tunnel: Tunnel, widget_bundle: dict[str, Any]) -> None:
    """Display the snapshot, then the live widget; later refreshes update the snapshot."""
    from nbtunnel.notebook.widget import tunnel_widget

    w = tunnel_widget(tunnel)
    display({"text/html": snapshot_html(w), "text/plain": tunnel.summary()}, raw=True,
            display_id=snapshot_id(tunnel))
    display(widget_bundle, raw=True)
    w.on_refresh = lambda: update_display(
        {"text/html": snapshot_html(w), "text/plain": tunnel.summary()}, raw=True,
        display_id=snapshot_id(tunnel))
