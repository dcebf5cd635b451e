"""nbtunnel: a pure-Python Cloudflare Tunnel (connector and edge) for notebooks and labs.

`import nbtunnel` stays cheap: the Python API (`open_tunnel`, `Tunnel`, ...) is loaded from
`nbtunnel.api` on first attribute access (PEP 562), and IPython/ipywidgets only by
`%load_ext nbtunnel` or when a `Tunnel` is displayed in a kernel. Packages: `core` (Sans-I/O
protocol), `transport` (QUIC, HTTP/2), `connector`, `edge`, `api`, `cli`, `notebook`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nbtunnel._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from nbtunnel.api import (
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
        import nbtunnel.api as api
        from nbtunnel.notebook.display import install

        install()  # a Tunnel shown in a kernel gets the notebook's panel (imports no IPython)
        return getattr(api, name)
    raise AttributeError(f"module 'nbtunnel' has no attribute {name!r}")


def __dir__() -> list[str]:
    """Tab completion lists the public (lazy) names."""
    return sorted(__all__)


def load_ipython_extension(ip: Any) -> None:
    """`%load_ext nbtunnel`: register the %tunnel magic (see nbtunnel.notebook)."""
    from nbtunnel.notebook import load_ipython_extension as load

    load(ip)


def unload_ipython_extension(ip: Any) -> None:
    """`%unload_ext nbtunnel`: stop the tunnels this kernel opened, remove the magic."""
    from nbtunnel.notebook import unload_ipython_extension as unload

    unload(ip)
