"""The Python API: `open_tunnel(8888)` -> `Tunnel`, usable with or without IPython.

Modules: `targets` (what users type: ports, URLs, HOST:PORT), `edges` (which edge, starting
one), `runtime` (the loop thread every tunnel runs on), `tunnel` (one running `Tunnel`),
`registry` (the open tunnels), `open` (open_tunnel), `state` (snapshots the panel reads).
Names load on first use (PEP 562) so `nbtunnel.api.targets` stays cheap for the CLI.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from nbtunnel.api.edges import EdgeSettings, resolve_edge
    from nbtunnel.api.errors import (
        AddressError,
        EdgeConfigError,
        RuntimeStateError,
        TargetError,
        TunnelError,
    )
    from nbtunnel.api.open import aopen_tunnel, open_tunnel
    from nbtunnel.api.registry import find_tunnel, list_tunnels, stop_all
    from nbtunnel.api.targets import normalize_target, parse_host_port
    from nbtunnel.api.tunnel import Tunnel

_WHERE = {
    "AddressError": "errors", "EdgeConfigError": "errors", "RuntimeStateError": "errors",
    "TargetError": "errors", "TunnelError": "errors", "EdgeSettings": "edges",
    "resolve_edge": "edges", "aopen_tunnel": "open", "open_tunnel": "open",
    "find_tunnel": "registry", "list_tunnels": "registry", "stop_all": "registry",
    "normalize_target": "targets", "parse_host_port": "targets", "Tunnel": "tunnel",
}
__all__ = ["AddressError", "EdgeConfigError", "EdgeSettings", "RuntimeStateError", "TargetError",
           "Tunnel", "TunnelError", "aopen_tunnel", "find_tunnel", "list_tunnels",
           "normalize_target", "open_tunnel", "parse_host_port", "resolve_edge", "stop_all"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'nbtunnel.api' has no attribute {name!r}")
    return getattr(importlib.import_module(f"nbtunnel.api.{module}"), name)


def __dir__() -> list[str]:
    """Tab completion lists the public (lazy) names."""
    return sorted(__all__)
