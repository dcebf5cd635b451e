"""QUIC transport for the edge and the connector, over qh3 (default) or aioquic.

``endpoint`` dials and listens, ``connection``/``stream`` are the library-neutral asyncio
shells, ``udp`` is our batched UDP endpoint and ``protocol`` the hooks both libraries' protocol
classes share. Everything a library does not offer through its public API lives in that
library's adapter: ``_qh3`` or ``_aioquic`` (+ ``_aioquic_mlkem``); nothing else touches a
library's private state.
"""

from __future__ import annotations

from nbtunnel.transport.quic.backend import ALPN, DEFAULT_SERVER_NAME, QuicSettings
from nbtunnel.transport.quic.connection import QuicTunnelConnection
from nbtunnel.transport.quic.endpoint import (
    BACKENDS,
    QuicServer,
    available_backends,
    connect,
    get_backend,
    serve,
)
from nbtunnel.transport.quic.stream import QuicStream

__all__ = [
    "ALPN",
    "BACKENDS",
    "DEFAULT_SERVER_NAME",
    "QuicServer",
    "QuicSettings",
    "QuicStream",
    "QuicTunnelConnection",
    "available_backends",
    "connect",
    "get_backend",
    "serve",
]
