"""nbtunnel: a pure-Python Cloudflare Tunnel (connector and edge) for notebooks and labs."""

from nbtunnel._version import __version__

__all__ = ["__version__"]
