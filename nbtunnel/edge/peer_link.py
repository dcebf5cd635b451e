"""The forwarding edge's side of a peer link, shaped like a connector connection.

`PeerTransport` is a `transport.base.TunnelConnection` (edge role) over one QUIC link to the
edge holding a tunnel, and `PeerStream` a `DataStream` on it: the exchange (`exchange.py`)
drives a forwarded request exactly as it drives one to a connector. The request head goes out
in QUIC wire form behind the peer header (see peering.py); the response head comes back the
same way.
"""

from __future__ import annotations

import asyncio

from nbtunnel.core.streams import ConnectRequest, ConnectResponse, encode_connect_request
from nbtunnel.transport.base import ConfigurationPush, ControlStream, DataStream
from nbtunnel.transport.errors import TransportClosedError, TransportError
from nbtunnel.transport.quic import QuicTunnelConnection
from nbtunnel.transport.quic.data_stream import QuicDataStream

END_STREAM = 0x01  # header flags: no request body follows the head
NOT_HERE = "nbtunnel-peer: "  # response error prefix: this edge holds no usable connection


class PeerStream:
    """Edge role of a data stream to another edge (`transport.base.DataStream`): the request
    head goes out in QUIC wire form behind the peer header; the holding edge answers with the
    connector's response head the same way."""

    def __init__(self, stream: QuicDataStream, header: bytes) -> None:
        self._stream = stream
        self._header = header

    async def send_request(self, request: ConnectRequest, *, end_stream: bool) -> None:
        flags = bytes([END_STREAM if end_stream else 0])
        await self._stream.write(self._header + flags + encode_connect_request(request))
        if end_stream:
            self._stream.write_eof()

    async def receive_response(self) -> ConnectResponse:
        response = await self._stream.receive_response()
        if response.error.startswith(NOT_HERE):
            # the edge lost its connections of the tunnel a moment ago (it is draining, or
            # the connector moved): like a dead connection, so the exchange retries an
            # idempotent request on another edge instead of answering 502
            raise TransportClosedError(response.error[len(NOT_HERE):])
        return response

    async def receive_request(self) -> ConnectRequest | ConfigurationPush | None:
        raise TransportError("a peer link carries no requests toward this edge")

    async def send_response(self, response: ConnectResponse) -> None:
        raise TransportError("a peer link carries no responses from this edge")

    @property
    def readable(self) -> bool:
        return self._stream.readable

    async def read(self, n: int = 65536) -> bytes:
        return await self._stream.read(n)

    async def write(self, data: bytes) -> None:
        await self._stream.write(data)

    def write_eof(self) -> None:
        self._stream.write_eof()

    def reset(self, code: int = 0) -> None:
        self._stream.reset(code)

    async def wait_peer_stopped(self) -> None:
        await self._stream.wait_peer_stopped()

    def peer_stopped(self) -> asyncio.Future[None]:
        return self._stream.peer_stopped()


class PeerTransport:
    """One tunnel's view of a QUIC link to another edge, as a connector connection
    (`transport.base.TunnelConnection`, edge role) for the exchange."""

    protocol = "peer"

    def __init__(self, conn: QuicTunnelConnection, header: bytes) -> None:
        self._conn = conn
        self._header = header

    @property
    def remote_address(self) -> tuple[str, int]:
        return self._conn.remote_address

    @property
    def close_reason(self) -> str:
        return self._conn.close_reason

    @property
    def closed(self) -> bool:
        return self._conn.closed

    @property
    def terminated(self) -> bool:
        return self._conn.terminated

    @property
    def silent_for(self) -> float:
        return self._conn.silent_for

    async def control_stream(self) -> ControlStream:
        raise TransportError("a peer link has no control stream")

    def open_stream(self) -> PeerStream:
        return PeerStream(self._conn.open_stream(), self._header)

    async def accept_stream(self) -> DataStream:
        raise TransportError("a peer link carries no requests toward this edge")

    async def update_configuration(self, version: int, config: bytes) -> tuple[int, str]:
        raise TransportError("configurations reach other edges through presence")

    def close(self, error_code: int = 0, reason: str = "") -> None:
        pass  # the link is shared by every forwarded request; PeerClient owns it

    async def wait_closed(self) -> None:
        await self._conn.wait_closed()
