"""Dial the edge over the transport a connector was asked for (cloudflared's `--protocol`)."""

from __future__ import annotations

from nbtunnel.transport import http2, quic
from nbtunnel.transport.base import TunnelConnection

PROTOCOLS = ("quic", "http2")


async def dial(protocol: str, host: str, port: int, *, cafile: str | None,
               cadata: bytes | None = None,
               quic_server_name: str = quic.DEFAULT_SERVER_NAME,
               quic_settings: quic.QuicSettings | None = None) -> TunnelConnection:
    """A connected ``TunnelConnection``; raises HandshakeError / ConnectTimeoutError.

    Trust: ``cafile`` and/or ``cadata`` (PEM) together; neither means the system store."""
    if protocol == "http2":
        return await http2.dial(host, port, cafile, cadata=cadata)
    if protocol != "quic":
        raise ValueError(f"unknown tunnel protocol {protocol!r} (one of {PROTOCOLS})")
    return await quic.connect(host, port, server_name=quic_server_name, cafile=cafile,
                              cadata=cadata, settings=quic_settings)
