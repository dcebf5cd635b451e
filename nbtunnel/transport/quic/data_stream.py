"""A tunnel stream over QUIC: the one place where stream heads are written and parsed.

Every edge-opened data stream starts with cloudflared's preamble (signature + version "01")
and a Cap'n Proto ``ConnectRequest``; the connector answers with the preamble and a
``ConnectResponse``; then the bodies follow as raw bytes. An edge-opened stream with the RPC
signature carries ``updateConfiguration`` instead (see configuration.py). Bytes that arrived
behind a head are handed out first by ``read()``.
"""

from __future__ import annotations

from nbtunnel.core.streams import (
    ConnectRequest,
    ConnectResponse,
    HeadParser,
    RpcStreamStart,
    encode_connect_request,
    encode_connect_response,
)
from nbtunnel.transport.errors import TransportError
from nbtunnel.transport.quic.configuration import QuicConfigurationPush
from nbtunnel.transport.quic.stream import WRITE_CHUNK, QuicStream


class QuicDataStream(QuicStream):
    """A bidi QUIC stream with the tunnel's heads (``transport.base.DataStream``)."""

    _rest = b""  # bytes read past a head, returned by the next read()

    async def read(self, n: int = 65536) -> bytes:
        rest = self._rest
        if not rest:
            return await super().read(n)
        self._rest = rest[n:]
        return rest[:n]

    @property
    def readable(self) -> bool:
        return bool(self._rest) or super().readable

    async def send_request(self, request: ConnectRequest, *, end_stream: bool) -> None:
        data = encode_connect_request(request)
        if end_stream and len(data) <= WRITE_CHUNK:
            # a request without a body (most): head and FIN in one frame, one library call,
            # and no back-pressure wait (nothing follows it on this stream)
            self._send_last(data)
            return
        await self.write(data)
        if end_stream:
            self.write_eof()

    async def receive_response(self) -> ConnectResponse:
        parser = HeadParser("response")
        while True:
            data = await QuicStream.read(self, 65536)  # nothing is held back before the head
            if not data:
                raise TransportError("the connector closed the stream before answering")
            head = parser.feed(data)
            if head is not None:
                assert isinstance(head, ConnectResponse)
                self._rest = parser.rest
                return head

    async def receive_request(self) -> ConnectRequest | QuicConfigurationPush | None:
        parser = HeadParser("request")
        while True:
            data = await self.read(65536)
            if not data:
                return None
            head = parser.feed(data)
            if isinstance(head, RpcStreamStart):
                return QuicConfigurationPush(self, parser.rest)
            if head is not None:
                assert isinstance(head, ConnectRequest)
                self._rest = parser.rest
                return head

    async def send_response(self, response: ConnectResponse) -> None:
        await self.write(encode_connect_response(response))
        if response.error:
            self.write_eof()

    async def send_complete_response(self, response: ConnectResponse, body: bytes) -> None:
        """Connector: a response whose body is all here (most): head, body and FIN in one
        frame, one library call and no back-pressure wait, as `send_request` does."""
        data = encode_connect_response(response) + body
        if len(data) > WRITE_CHUNK:
            await self.write(data)
            self.write_eof()
            return
        self._send_last(data)

    def finish(self) -> None:
        """End of the control plane: nothing to send on QUIC (the connection close follows)."""
