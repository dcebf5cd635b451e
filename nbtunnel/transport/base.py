"""The seam between the tunnel's domain code (edge/, connector/) and its transports.

The edge and the connector are written against these Protocols only; QUIC
(``transport/quic``), HTTP/2 (``transport/http2``) and the in-memory pair
(``transport/memory``) implement them. What differs between the transports stays behind
the seam: how a request head travels (a Cap'n Proto ``ConnectRequest`` after the data-stream
preamble on QUIC, HTTP/2 HEADERS on HTTP/2), who opens the control stream, and how a remote
configuration is pushed (an RPC stream on QUIC, an ``update-configuration`` request on HTTP/2).

Roles: the *edge* opens data streams (``open_stream``), sends a request head and receives a
response head; the *connector* accepts them (``accept_stream``), receives the request head and
sends the response head. Both read and write the body bytes that follow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from nbtunnel.core.streams import ConnectRequest, ConnectResponse

ConfigHandler = Callable[[int, bytes], tuple[int, str]]
"""Applies a remote configuration ``(version, json)``; returns ``(applied version, error)``."""


class ByteStream(Protocol):
    """A bidirectional byte stream with half-close and abort."""

    async def read(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes; ``b""`` once the peer ended its side.

        Raises StreamResetError when the peer aborted the stream and TransportClosedError once
        the connection is gone."""
        ...

    @property
    def readable(self) -> bool:
        """True when ``read()`` would return (or raise) without waiting: bytes are buffered,
        the peer ended its side, or the stream failed. A relay holds what it wrote while
        this is true and flushes before it would wait (one send per burst)."""
        ...

    async def write(self, data: bytes) -> None:
        """Send ``data``; waits while the peer's window or our send buffer is full."""
        ...

    def write_eof(self) -> None:
        """End our side (FIN / END_STREAM); reading goes on."""
        ...

    def reset(self, code: int = 0) -> None:
        """Abort both directions; the peer sees a reset."""
        ...


class ControlStream(ByteStream, Protocol):
    """The registration RPC's stream (no preamble)."""

    def finish(self) -> None:
        """The control plane is over (after unregistering). HTTP/2 ends the control request
        with RST_STREAM(NO_ERROR), as cloudflared does; QUIC sends nothing (the connection
        close follows)."""
        ...


class ConfigurationPush(Protocol):
    """A remote configuration the edge sent on its own stream (connector role)."""

    async def serve(self, apply: ConfigHandler) -> None:
        """Read the configuration, call ``apply`` and answer the edge with its result."""
        ...


class DataStream(ByteStream, Protocol):
    """One request/response exchange: a head each way, then the bodies as bytes."""

    async def send_request(self, request: ConnectRequest, *, end_stream: bool) -> None:
        """Edge role: send the request head; ``end_stream`` when no body follows."""
        ...

    async def receive_response(self) -> ConnectResponse:
        """Edge role: the connector's response head (``read()`` then returns the body).

        Raises TransportError (TransportClosedError when the connection died first)."""
        ...

    async def receive_request(self) -> ConnectRequest | ConfigurationPush | None:
        """Connector role: the request head, a configuration push, or None when the edge
        ended the stream before sending a head. Raises ProtocolError on a malformed head."""
        ...

    async def send_response(self, response: ConnectResponse) -> None:
        """Connector role: the response head (an ``error`` response also ends our side)."""
        ...

    async def wait_peer_stopped(self) -> None:
        """Return once the peer no longer wants our data (its client left) or the connection
        ended; a proxy uses it to abandon a silent origin request."""
        ...

    def peer_stopped(self) -> asyncio.Future[None]:
        """The same moment as a future, for a done-callback: watching every request this way
        costs no task (do not cancel it; remove the callback instead)."""
        ...


class TunnelConnection(Protocol):
    """One connection between a connector and the edge, either role."""

    @property
    def protocol(self) -> str:
        """``"quic"`` or ``"http2"`` (what the registry and ``tunnel info`` show)."""
        ...

    @property
    def remote_address(self) -> tuple[str, int]: ...

    @property
    def close_reason(self) -> str: ...

    @property
    def closed(self) -> bool:
        """No new streams (closed, or the peer announced it goes away)."""
        ...

    @property
    def terminated(self) -> bool:
        """The connection is gone; streams accepted before a graceful GOAWAY are done too."""
        ...

    @property
    def silent_for(self) -> float:
        """Seconds since the peer was last heard from (0.0 when the transport cannot tell)."""
        ...

    async def control_stream(self) -> ControlStream:
        """The registration stream: opened by whichever side the transport says (the connector
        over QUIC, the edge over HTTP/2) and accepted by the other."""
        ...

    def open_stream(self) -> DataStream:
        """Edge role: a new data stream. Raises TransportClosedError when ``closed``."""
        ...

    async def accept_stream(self) -> DataStream:
        """Connector role: the next data stream the edge opened; TransportClosedError once the
        connection ends."""
        ...

    async def update_configuration(self, version: int, config: bytes) -> tuple[int, str]:
        """Edge role: push a remote configuration; ``(applied version, error text)``."""
        ...

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """Close now (CONNECTION_CLOSE / GOAWAY); ``wait_closed()`` returns once it is gone."""
        ...

    async def wait_closed(self) -> None: ...
