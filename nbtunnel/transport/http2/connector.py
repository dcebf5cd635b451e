"""The connector's role over HTTP/2: dial the edge, then serve HTTP/2 on that connection.

We dial TCP+TLS (SNI h2.cftunnel.com, no ALPN, the edge CA) and, roles inverted, are the HTTP/2
server: the edge opens the control stream (answered 200, its bodies carry the RPC both ways),
then one request per eyeball request, and `update-configuration` requests with a JSON body
instead of an RPC stream.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from nbtunnel.core.h2.frames import Setting
from nbtunnel.core.h2headers import Headers
from nbtunnel.transport.errors import HandshakeError, TransportError
from nbtunnel.transport.http2.connection import FRAME_SIZE, WINDOW, H2Connection
from nbtunnel.transport.http2.stream import H2Stream

log = logging.getLogger("nbtunnel.transport.http2")

SERVER_NAME = "h2.cftunnel.com"
DIAL_TIMEOUT = 15.0  # cloudflared's TCP dial timeout


async def dial(host: str, port: int, cafile: str | None,
               server_name: str = SERVER_NAME,
               cadata: bytes | None = None) -> ConnectorH2Connection:
    """TLS to the edge (no ALPN, as cloudflared) and start serving HTTP/2 on it.

    Trust: cafile and/or cadata (PEM) together; neither means the system store."""
    ctx = ssl.create_default_context(
        cafile=cafile, cadata=cadata.decode("ascii") if cadata else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(DIAL_TIMEOUT):
            _, conn = await loop.create_connection(
                ConnectorH2Connection, host, port, ssl=ctx, server_hostname=server_name)
    except (OSError, TimeoutError) as exc:
        raise HandshakeError(f"HTTP/2 dial to {host}:{port} failed: "
                             f"{exc or type(exc).__name__}", exc) from exc
    return conn


class ConnectorH2Connection(H2Connection):
    """One connection to the edge over HTTP/2, where we are the server."""

    client_side = False
    peer_name = "edge"
    settings = {Setting.INITIAL_WINDOW_SIZE: WINDOW,
                Setting.MAX_CONCURRENT_STREAMS: 2**31 - 1,
                Setting.MAX_FRAME_SIZE: FRAME_SIZE}
    # The peer is the edge we authenticated (its certificate): its request heads are checked
    # where they are used (connect_request; the origin client refuses CR/LF and drops
    # hop-by-hop fields), so the core does no per-field checks.

    def __init__(self) -> None:
        super().__init__()
        self._accepted: asyncio.Queue[H2Stream | None] = asyncio.Queue()

    async def control_stream(self) -> H2Stream:
        """Wait for the edge's control-stream request and answer 200 (the body streams on)."""
        while True:
            stream = await self._next()
            if stream.upgrade == "control-stream":
                stream.respond([(":status", "200"), ("content-type", "application/octet-stream")])
                return stream
            log.debug("request before the control stream; refusing it")
            stream.reset()

    async def accept_stream(self) -> H2Stream:
        """The next data or configuration request; TransportClosedError once the connection
        ends. A second control-stream request is refused."""
        while True:
            stream = await self._next()
            if stream.upgrade != "control-stream":
                return stream
            stream.reset()  # only the first one is the control stream

    def open_stream(self) -> H2Stream:
        raise TransportError("over HTTP/2 the edge opens every stream")

    async def update_configuration(self, version: int, config: bytes) -> tuple[int, str]:
        raise TransportError("only the edge pushes configurations")

    async def _next(self) -> H2Stream:
        stream = await self._accepted.get()
        if stream is None:
            self._accepted.put_nowait(None)
            raise self.closed_error()
        return stream

    def _on_request(self, stream_id: int, headers: Headers, *, ended: bool) -> None:
        stream = H2Stream(self, stream_id, headers)
        self.streams[stream_id] = stream
        if ended:
            stream.on_end()
        self._accepted.put_nowait(stream)

    def _on_terminated(self) -> None:
        self._accepted.put_nowait(None)
