"""cloudflared's HTTP/2 transport (`--protocol http2`), both roles, written once.

``connection`` is the asyncio shell of the sans-I/O HTTP/2 connection in core/h2 (``client``
picks the role) and ``stream`` the one stream class; ``edge`` (client role + listener) and
``connector`` (server role + dial) add the control stream and the configuration push.
"""

from __future__ import annotations

from nbtunnel.transport.http2.configuration import H2ConfigurationPush
from nbtunnel.transport.http2.connection import CONN_WINDOW, WINDOW, H2Connection
from nbtunnel.transport.http2.connector import ConnectorH2Connection, dial
from nbtunnel.transport.http2.edge import EdgeH2Connection, H2Listener
from nbtunnel.transport.http2.stream import H2Stream

__all__ = [
    "CONN_WINDOW",
    "WINDOW",
    "ConnectorH2Connection",
    "EdgeH2Connection",
    "H2ConfigurationPush",
    "H2Connection",
    "H2Listener",
    "H2Stream",
    "dial",
]
