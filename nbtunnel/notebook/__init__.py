"""The notebook layer: the %tunnel magic, the status panel, JupyterHub proxy URLs.

This is the only part of nbtunnel that imports IPython and ipywidgets. It sits on the Python
API (`nbtunnel.api`), never the reverse: the panel reaches `Tunnel`'s display through
`display.install()`. The magic (and IPython) load only from `load_ipython_extension`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from nbtunnel.notebook.magics import TunnelMagics

__all__ = ["TunnelMagics", "load_ipython_extension", "unload_ipython_extension"]

_loaded: dict[int, TunnelMagics] = {}


def __getattr__(name: str) -> Any:
    if name == "TunnelMagics":
        from nbtunnel.notebook.magics import TunnelMagics

        return TunnelMagics
    raise AttributeError(f"module 'nbtunnel.notebook' has no attribute {name!r}")


def load_ipython_extension(ip: Any) -> None:
    from nbtunnel.api.tunnel import Tunnel
    from nbtunnel.notebook.display import install
    from nbtunnel.notebook.magics import TunnelMagics

    install()
    magics = TunnelMagics(ip)
    ip.register_magics(magics)
    ip.display_formatter.ipython_display_formatter.for_type(Tunnel, magics.display_tunnel)
    ip.events.register("post_run_cell", magics.post_run_cell)
    _loaded[id(ip)] = magics


def unload_ipython_extension(ip: Any) -> None:
    """Stop every tunnel (and the loop thread), then remove %tunnel from the shell."""
    from nbtunnel.api.registry import stop_all
    from nbtunnel.notebook.magics import TunnelMagics

    stop_all()
    magics = _loaded.pop(id(ip), None)
    if magics is not None:
        ip.events.unregister("post_run_cell", magics.post_run_cell)
        from nbtunnel.api.tunnel import Tunnel

        ip.display_formatter.ipython_display_formatter.type_printers.pop(Tunnel, None)
    mm = ip.magics_manager
    for kind in ("line", "cell"):
        mm.magics[kind].pop("tunnel", None)
    mm.registry.pop(TunnelMagics.__name__, None)
