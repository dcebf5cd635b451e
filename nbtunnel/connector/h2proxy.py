"""Adapt an HTTP/2 request from the edge to the QUIC-shaped stream `StreamProxy` serves.

cloudflared's HTTP/2 data plane carries ordinary HTTP/2 requests; our proxy speaks
preamble + ConnectRequest / ConnectResponse. `H2ProxyStream` presents a synthesized head
followed by the request body to `read()`, and turns what the proxy `write()`s back into the
HTTP/2 response cloudflared sends (`:status`, 101→200, serialized headers, response meta,
502 from "cloudflared" on a ConnectResponse error), so the proxy needs no second code path.
"""

from __future__ import annotations

from nbtunnel.connector.h2transport import CANCEL, H2ServerStream
from nbtunnel.core.h2headers import (
    META_CLOUDFLARED,
    META_ORIGIN,
    RESPONSE_HEADERS,
    RESPONSE_META,
    UPGRADE_HEADER,
    encode_serialized_headers,
    serializable,
)
from nbtunnel.core.httpmeta import build_connect_request, parse_http_response
from nbtunnel.core.streams import (
    ConnectionType,
    ConnectRequest,
    ConnectResponse,
    HeadParser,
    encode_connect_request,
)
from nbtunnel.transport.errors import TransportError

PROXY_SRC_HEADER = "cf-cloudflared-proxy-src"  # a private-routing TCP stream (section 4)


def connect_request(stream: H2ServerStream) -> ConnectRequest:
    """The ConnectRequest cloudflared would see for this HTTP/2 request (defaults as in §4)."""
    pseudo = {n: v for n, v in stream.headers if n.startswith(":")}
    if stream.header(PROXY_SRC_HEADER):
        return ConnectRequest(dest=pseudo.get(":authority", ""), type=ConnectionType.TCP,
                              metadata=[])
    websocket = stream.header(UPGRADE_HEADER).lower() == "websocket"
    headers = [(n, v) for n, v in stream.headers
               if not n.startswith(":") and n != UPGRADE_HEADER]
    if (not websocket and not stream.ended
            and not any(n == "content-length" for n, _ in headers)):
        headers.append(("transfer-encoding", "chunked"))  # a body of unknown length follows
    return build_connect_request(
        pseudo.get(":method", "GET"), pseudo.get(":authority") or "localhost:8080",
        pseudo.get(":path", "/"), headers, scheme=pseudo.get(":scheme") or "http",
        websocket=websocket)


def response_headers(resp: ConnectResponse) -> list[tuple[str, str]]:
    """HTTP/2 response head for the proxy's ConnectResponse."""
    if resp.error:
        return [(":status", "502"), (RESPONSE_META, META_CLOUDFLARED)]
    if not resp.metadata:  # a private-routing TCP ack: cloudflared answers 101, sent as 200
        return [(":status", "200"), (RESPONSE_HEADERS, ""), (RESPONSE_META, META_ORIGIN)]
    status, origin = parse_http_response(resp)
    if status == 101:
        status = 200  # the upgraded stream then carries bytes both ways
    kept = [(n, v) for n, v in origin if serializable(n)]
    return [(":status", str(status)), (RESPONSE_HEADERS, encode_serialized_headers(kept)),
            (RESPONSE_META, META_ORIGIN)]


class H2ProxyStream:
    """The proxy's view of one HTTP/2 data request."""

    def __init__(self, inner: H2ServerStream) -> None:
        self.inner = inner
        self._head: bytes | None = encode_connect_request(connect_request(inner))
        self._parser = HeadParser("response")
        self._error = False

    async def read(self, n: int = 65536) -> bytes:
        if self._head is not None:
            head, self._head = self._head, None
            return head
        return await self.inner.read(n)

    async def write(self, data: bytes) -> None:
        if not self.inner.responded:
            head = self._parser.feed(data)
            if head is None:
                return
            if not isinstance(head, ConnectResponse):
                raise TransportError("the proxy wrote no ConnectResponse")
            self._error = bool(head.error)
            self.inner.respond(response_headers(head), end_stream=self._error)
            data = self._parser.rest
        if data and not self._error:
            await self.inner.write(data)

    def write_eof(self) -> None:
        self.inner.write_eof()

    def reset(self, code: int = 0) -> None:
        self.inner.reset(CANCEL)

    async def wait_peer_stopped(self) -> None:
        await self.inner.wait_peer_stopped()
