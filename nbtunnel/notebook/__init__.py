"""The notebook layer: the %tunnel magic, the status widget, JupyterHub proxy URLs.

This is the only part of nbtunnel that imports IPython and ipywidgets; `nbtunnel` itself loads
it only from `load_ipython_extension` (and from `Tunnel._repr_mimebundle_` inside a kernel).
"""

from __future__ import annotations

from typing import Any

from nbtunnel.notebook.magics import TunnelMagics

__all__ = ["TunnelMagics", "load_ipython_extension", "unload_ipython_extension"]

_loaded: dict[int, TunnelMagics] = {}


def load_ipython_extension(ip: Any) -> None:
    magics = TunnelMagics(ip)
    ip.register_magics(magics)
    ip.events.register("post_run_cell", magics.post_run_cell)
    _loaded[id(ip)] = magics


def unload_ipython_extension(ip: Any) -> None:
    """Stop every tunnel (and the loop thread), then remove %tunnel from the shell."""
    from nbtunnel.tunnel import stop_all

    stop_all()
    magics = _loaded.pop(id(ip), None)
    if magics is not None:
        ip.events.unregister("post_run_cell", magics.post_run_cell)
    mm = ip.magics_manager
    for kind in ("line", "cell"):
        mm.magics[kind].pop("tunnel", None)
    mm.registry.pop(TunnelMagics.__name__, None)
