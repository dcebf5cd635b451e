"""Stream origins: TCP services behind a tunnel, served as cloudflared serves them.

Two kinds of data streams end in a raw TCP connection instead of an HTTP exchange:

* a request matching a rule whose service is `tcp://`, `ssh://` (default port 22), `rdp://`
  (3389), `smb://` (445), any other non-HTTP scheme (`tcp` defaults to 7864, as in
  cloudflared), or `bastion` (the destination comes from `Cf-Access-Jump-Destination`): we dial
  the origin, acknowledge with `101` (plus `Sec-WebSocket-Accept` when the request carried a
  key) and become the WebSocket server on the stream, as `cloudflared access` expects;
* a `type = tcp` stream (private routing, the destination `IP:port` in the request), served only
  when the configuration enables `warp-routing`: an empty ConnectResponse, then raw bytes.

Half-closes are honoured both ways (see `pipe.py`); cloudflared itself tears a flow down when
either direction ends, so a peer that relies on that still sees the flow end.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from nbtunnel.connector.origin_parts import _dial_error, _Target
from nbtunnel.connector.pipe import pipe_carrier, pipe_raw
from nbtunnel.connector.warp import WarpRouting
from nbtunnel.core.errors import NbtunnelError
from nbtunnel.core.httpmeta import HttpRequestHead, build_connect_response
from nbtunnel.core.streams import ConnectRequest, ConnectResponse
from nbtunnel.core.wscarrier import WsCarrier, accept_key
from nbtunnel.transport.base import DataStream

log = logging.getLogger("nbtunnel.connector.stream")

DEFAULT_PORTS = {"ssh": 22, "rdp": 3389, "smb": 445, "tcp": 7864}
HTTP_SCHEMES = frozenset({"http", "https", "ws", "wss"})
JUMP_HEADER = "cf-access-jump-destination"
NO_JUMP_DESTINATION = ("Did not receive final destination from client. The --destination flag "
                       "is likely not set on the client side")
RATE_LIMITED = "FlowConnectRateLimited"


class StreamOriginError(NbtunnelError):
    """The stream's origin cannot be reached or named; the text goes to ConnectResponse.error
    (as cloudflared's, e.g. `dial tcp 127.0.0.1:22: connect: connection refused`)."""

    def __init__(self, message: str, *, rate_limited: bool = False) -> None:
        super().__init__(message)
        self.rate_limited = rate_limited

    def response(self) -> ConnectResponse:
        meta = [(RATE_LIMITED, "true")] if self.rate_limited else []
        return ConnectResponse(error=str(self), metadata=meta)


def is_stream_service(service: str) -> bool:
    """True for services served as TCP over WebSocket (everything but HTTP-ish ones)."""
    known = _STREAM_SERVICE.get(service)
    if known is not None:
        return known
    if service in ("bastion", "socks-proxy"):
        known = True
    else:
        scheme, sep, _ = service.partition("://")
        known = bool(sep) and scheme.lower() not in HTTP_SCHEMES
    if len(_STREAM_SERVICE) < 256:  # services come from the configuration: a few
        _STREAM_SERVICE[service] = known
    return known


_STREAM_SERVICE: dict[str, bool] = {}


def service_destination(service: str) -> tuple[str, int]:
    """host, port of a `scheme://host[:port]` stream service, with cloudflared's defaults."""
    parts = urlsplit(service)
    host = parts.hostname
    if not host:
        raise StreamOriginError(f"service {service!r} has no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise StreamOriginError(f"service {service!r} has a bad port") from exc
    return host, port or DEFAULT_PORTS.get(parts.scheme.lower(), 7864)


def bastion_destination(headers: list[tuple[str, str]]) -> tuple[str, int]:
    """The jump destination a bastion client asked for (scheme and path stripped)."""
    value = next((v for k, v in headers if k.lower() == JUMP_HEADER), "").strip()
    if not value:
        raise StreamOriginError(NO_JUMP_DESTINATION)
    if "://" in value:
        value = urlsplit(value).netloc or value
    value = value.split("/", 1)[0]
    return split_host_port(value)


def split_host_port(text: str) -> tuple[str, int]:
    """`host:port` / `[v6]:port` -> (host, port); raises StreamOriginError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise StreamOriginError(f"address {text}: missing or bad port")
    return host.strip("[]"), int(port)


def private_destination(dest: str) -> tuple[str, int]:
    """A `type = tcp` destination must be a literal IP:port (Go's netip.ParseAddrPort)."""
    host, port = split_host_port(dest)
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise StreamOriginError(f"ParseAddrPort({dest!r}): not an IP address") from exc
    return host, port


@dataclass
class Flow:
    """Byte counts of one flow, for the request event."""

    bytes_in: int = 0  # edge -> origin
    bytes_out: int = 0  # origin -> edge


async def dial(host: str, port: int, timeout: float) -> tuple[asyncio.StreamReader,
                                                               asyncio.StreamWriter]:
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.open_connection(host, port, limit=2**17)
    except Exception as exc:
        err = _dial_error(_Target("", host, port, False, None), exc)
        raise StreamOriginError(err.cause) from exc


class StreamOrigins:
    """Serves the stream kinds above; one per connector (it counts private-routing flows)."""

    def __init__(self) -> None:
        self.active_tcp_flows = 0

    async def carrier(self, stream: DataStream, head: HttpRequestHead, service: str,
                      connect_timeout: float, flow: Flow) -> int:
        """Dial the rule's origin, ack with 101 and carry the flow as WebSocket frames."""
        if service == "socks-proxy":
            raise StreamOriginError("the socks-proxy service is not supported by the nbtunnel "
                                    "connector")
        if service == "bastion":
            host, port = bastion_destination(head.headers)
        else:
            host, port = service_destination(service)
        reader, writer = await dial(host, port, connect_timeout)
        try:
            key = next((v for k, v in head.headers if k.lower() == "sec-websocket-key"), "")
            # cloudflared sends only HttpStatus=101 without a key; the Upgrade header lets an
            # edge tell this switch from a plain 200 when HTTP/2 rewrites 101 to 200
            headers = [("Connection", "Upgrade"), ("Upgrade", "websocket")]
            if key:
                headers.insert(1, ("Sec-Websocket-Accept", accept_key(key)))
            await stream.send_response(build_connect_response(101, headers))
            await pipe_carrier(stream, reader, writer, WsCarrier(client=False), flow)
        finally:
            writer.close()
        return 101

    async def tcp(self, stream: DataStream, req: ConnectRequest, warp: WarpRouting,
                  flow: Flow) -> None:
        """A private-routing TCP stream: dial `dest`, empty ConnectResponse, raw bytes."""
        if not warp.enabled:
            raise StreamOriginError("warp-routing is not enabled on this connector, so it "
                                    "serves no private TCP streams (set `warp-routing: "
                                    "{enabled: true}` in its configuration)")
        host, port = private_destination(req.dest)
        if warp.max_active_flows and self.active_tcp_flows >= warp.max_active_flows:
            raise StreamOriginError("failed to start tcp flow due to rate limiting: too many "
                                    "active flows", rate_limited=True)
        self.active_tcp_flows += 1
        try:
            reader, writer = await dial(host, port, warp.connect_timeout)
            try:
                await stream.send_response(ConnectResponse(error="", metadata=[]))
                await pipe_raw(stream, reader, writer, flow)
            finally:
                writer.close()
        finally:
            self.active_tcp_flows -= 1
