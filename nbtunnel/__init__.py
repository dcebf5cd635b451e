"""nbtunnel: a pure-Python Cloudflare Tunnel (connector and edge) for notebooks and labs.

`import nbtunnel` stays cheap: the Python API (`open_tunnel`, `Tunnel`, ...) is loaded on first
attribute access (PEP 562), and IPython/ipywidgets only by `%load_ext nbtunnel`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbtunnel._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from nbtunnel.tunnel import (
        TargetError,
        Tunnel,
        TunnelError,
        aopen_tunnel,
        find_tunnel,
        list_tunnels,
        open_tunnel,
        stop_all,
    )

_LAZY = {"Tunnel", "TunnelError", "TargetError", "aopen_tunnel", "list_tunnels", "open_tunnel",
         "stop_all", "find_tunnel"}

__all__ = ["TargetError", "Tunnel", "TunnelError", "__version__", "aopen_tunnel", "find_tunnel",
           "list_tunnels", "load_ipython_extension", "open_tunnel", "stop_all",
           "unload_ipython_extension"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from nbtunnel import tunnel

        return getattr(tunnel, name)
    raise AttributeError(f"module 'nbtunnel' has no attribute {name!r}")


def load_ipython_extension(ip: Any) -> None:
    """`%load_ext nbtunnel`: register the %tunnel magic (see nbtunnel.notebook)."""
    from nbtunnel.notebook import load_ipython_extension as load

    load(ip)


def unload_ipython_extension(ip: Any) -> None:
    """`%unload_ext nbtunnel`: stop the tunnels this kernel opened, remove the magic."""
    from nbtunnel.notebook import unload_ipython_extension as unload

    unload(ip)
