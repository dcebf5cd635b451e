"""The Python API's typed errors; each carries its cause (`raise ... from`)."""

from __future__ import annotations

from nbtunnel.core.errors import NbtunnelError


class TunnelError(NbtunnelError):
    """A tunnel could not be opened (edge unreachable, no connection registered in time)."""


class TargetError(TunnelError, ValueError):
    """The target is not a port, URL, hello_world or http_status:NNN."""


class AddressError(NbtunnelError, ValueError):
    """Not a HOST:PORT address."""


class EdgeConfigError(NbtunnelError):
    """The edge configuration (argument, NBTUNNEL_EDGE or config file) cannot be used."""


class RuntimeStateError(NbtunnelError):
    """The runtime was used from the wrong thread, or after it was shut down."""
