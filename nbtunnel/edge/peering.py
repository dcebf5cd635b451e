"""Any edge serves any tunnel: a request for a tunnel whose connections are all on another
edge is forwarded to that edge over an authenticated edge-to-edge QUIC link.

The forwarding edge (B) runs the usual exchange (`exchange.py`) on a stream of its QUIC link
to the holding edge (A), as if A were a connector (`PeerTransport` is a `TunnelConnection`):
the request head in QUIC wire form, bodies, WebSocket bytes and resets, so nothing is buffered
and back-pressure holds end to end. Each stream starts with a header: `NBPEER01`, a 32-byte
token (derived from the deployment's CA key, which every edge of it holds and Redis never
sees), the tunnel id and a flags byte. A checks the
token, hands the head to one of its own connections of that tunnel (QUIC or HTTP/2: the
transport seam hides which), relays the response head and pipes the bodies both ways; it
never forwards further (no loops). The link is TLS: B verifies A's certificate with the
deployment's CA (every edge of a deployment shares it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import time
import uuid

from nbtunnel.core.errors import ProtocolError
from nbtunnel.core.streams import (
    ConnectRequest,
    ConnectResponse,
)
from nbtunnel.edge.peer_link import END_STREAM, NOT_HERE, PeerTransport
from nbtunnel.edge.presence import EdgeInfo, Presence
from nbtunnel.edge.registry import STALE_AFTER, LiveConnection, Registry
from nbtunnel.transport.base import ByteStream, DataStream
from nbtunnel.transport.errors import TransportError
from nbtunnel.transport.quic import QuicSettings, QuicTunnelConnection, connect
from nbtunnel.transport.quic.data_stream import QuicDataStream

log = logging.getLogger("nbtunnel.edge.peering")

MAGIC = b"NBPEER01"
HEADER_SIZE = len(MAGIC) + 32 + 16 + 1  # magic, token, tunnel id, flags
HEADER_TIMEOUT = 10.0
HEARTBEAT_SILENCE = 3.0  # presence heartbeats come every 2 s: older means dead
REFUSED = 0x50  # stream reset code: bad peer header
SERVER_NAME = "quic.cftunnel.com"  # the edge certificate's name (transport/tls.py)
_NIL = uuid.UUID(int=0)


def peer_token(secret: bytes) -> bytes:
    """The token peers present: `secret` is `--peer-secret` or the CA's private key (PEM)."""
    return hmac.new(secret, b"nbtunnel-peer-v1", hashlib.sha256).digest()


class PeerClient:
    """The forwarding side: one QUIC link per remote edge, opened on first use and reused."""

    def __init__(self, presence: Presence, *, cafile: str, token: bytes,
                 settings: QuicSettings | None = None) -> None:
        self.presence = presence
        self.cafile = cafile
        self.token = token
        self.settings = settings or QuicSettings(idle_timeout=10.0)
        self._links: dict[str, tuple[tuple[str, int], QuicTunnelConnection]] = {}
        self._dialing: dict[str, asyncio.Task[QuicTunnelConnection | None]] = {}
        self.forwarded = 0

    async def aclose(self) -> None:
        for task in self._dialing.values():
            task.cancel()
        await asyncio.gather(*self._dialing.values(), return_exceptions=True)
        for _, conn in self._links.values():
            conn.close(0, "edge shutting down")
        self._links.clear()

    def _link(self, info: EdgeInfo) -> QuicTunnelConnection | None:
        have = self._links.get(info.id)
        if have is not None and have[0] == info.peer and not have[1].closed:
            return have[1]
        return None

    async def link(self, info: EdgeInfo) -> QuicTunnelConnection | None:
        conn = self._link(info)
        if conn is not None:
            return conn
        task = self._dialing.get(info.id)
        if task is None:  # one dial per edge however many requests wait for it
            task = asyncio.get_running_loop().create_task(self._dial(info))
            self._dialing[info.id] = task
            task.add_done_callback(lambda _: self._dialing.pop(info.id, None))
        return await asyncio.shield(task)

    async def _dial(self, info: EdgeInfo) -> QuicTunnelConnection | None:
        assert info.peer is not None
        try:
            conn = await connect(info.peer[0], info.peer[1], server_name=SERVER_NAME,
                                 cafile=self.cafile, settings=self.settings)
        except TransportError as exc:
            log.warning("cannot reach edge %s at %s:%d: %s", info.id, *info.peer, exc)
            self.presence.forget_edge(info.id)
            return None
        old = self._links.pop(info.id, None)
        if old is not None:
            old[1].close(0, "replaced")
        self._links[info.id] = (info.peer, conn)
        return conn

    def _live(self, tunnel_id: uuid.UUID, info: EdgeInfo,
              conn: QuicTunnelConnection) -> LiveConnection:
        header = MAGIC + self.token + tunnel_id.bytes
        return LiveConnection(
            tunnel_id=tunnel_id, conn_index=-1, connector_id=_NIL, connection_id=uuid.uuid4(),
            protocol="peer", edge_location=info.location, origin_ip=info.peer[0] if info.peer
            else "", client_version="", client_arch="", features=[], opened_at=time.time(),
            transport=PeerTransport(conn, header))

    async def pick(self, tunnel_id: uuid.UUID) -> LiveConnection | None:
        """A connection through another edge holding the tunnel, or None."""
        edges = await self.presence.edges_for(tunnel_id)
        random.shuffle(edges)
        for info in edges:
            have = self._link(info)
            if have is not None and have.silent_for > STALE_AFTER:
                # we ping every second and a live edge answers: a silent one is dead (SIGKILL)
                # or very busy; its presence heartbeat (every 2 s) tells which
                heard = await self.presence.heard_from(info.id)
                if heard is None or heard > HEARTBEAT_SILENCE:
                    # dead: skip it, and fail what waits on it now (idempotent requests are
                    # retried elsewhere) rather than when QUIC's idle timer fires
                    self.presence.forget_edge(info.id)
                    have.close(0, f"edge {info.id} is silent")
                    continue
            conn = have or await self.link(info)
            if conn is not None:
                self.forwarded += 1
                return self._live(tunnel_id, info, conn)
        return None

    def pick_cached(self, tunnel_id: uuid.UUID,
                    exclude: LiveConnection | None = None) -> LiveConnection | None:
        """Another edge for a retry, without waiting (links already open)."""
        failed = exclude.transport if exclude is not None else None
        for info in self.presence.cached_edges_for(tunnel_id):
            conn = self._link(info)
            if conn is not None and not (isinstance(failed, PeerTransport)
                                         and failed._conn is conn):
                self.forwarded += 1
                return self._live(tunnel_id, info, conn)
        return None


class PeerServer:
    """The holding side: serves links from other edges (the `on_connection` of a listener)."""

    def __init__(self, registry: Registry, token: bytes, edge_id: str) -> None:
        self.registry = registry
        self.token = token
        self.edge_id = edge_id
        self.relayed = 0

    async def serve(self, conn: QuicTunnelConnection) -> None:
        async with asyncio.TaskGroup() as tg:
            while True:
                try:
                    stream = await conn.accept_stream()
                except TransportError:
                    return
                tg.create_task(self._relay(conn, stream))

    async def _relay(self, conn: QuicTunnelConnection, peer: QuicDataStream) -> None:
        try:
            async with asyncio.timeout(HEADER_TIMEOUT):
                head = await peer.readexactly(HEADER_SIZE)
                request = None
                if head[:8] == MAGIC and hmac.compare_digest(head[8:40], self.token):
                    request = await peer.receive_request()
        except (TimeoutError, asyncio.IncompleteReadError, TransportError, ProtocolError):
            peer.reset(REFUSED)
            return
        if not isinstance(request, ConnectRequest):
            log.warning("refused a stream from %s: bad peer header or request",
                        conn.remote_address[0])
            peer.reset(REFUSED)
            return
        tunnel_id = uuid.UUID(bytes=head[40:56])
        end_stream = bool(head[56] & END_STREAM)
        live = self.registry.pick(tunnel_id)
        stream: DataStream | None = None
        if live is not None:
            with contextlib.suppress(TransportError):
                stream = live.transport.open_stream()
        if live is None or stream is None:
            await self._refuse(peer, f"{NOT_HERE}edge {self.edge_id} holds no usable "
                                     f"connection of tunnel {tunnel_id} any more")
            return
        self.relayed += 1
        live.in_flight += 1
        try:
            await relay(peer, stream, request, end_stream)
        finally:
            live.in_flight -= 1
            live.served += 1
            if live.draining and live.in_flight == 0:
                live.transport.close(0, "unregistered")

    async def _refuse(self, peer: QuicDataStream, why: str) -> None:
        with contextlib.suppress(TransportError):
            await peer.send_response(ConnectResponse(error=why, metadata=[]))
        peer.stop_reading()  # the request body is not wanted


async def relay(peer: QuicDataStream, stream: DataStream, request: ConnectRequest,
                end_stream: bool) -> None:
    """Hand a forwarded request to a connector connection and pipe both directions until both
    end; a failure on either side resets both."""

    async def up() -> None:
        await stream.send_request(request, end_stream=end_stream)
        if not end_stream:
            await pump(peer, stream)

    async def down() -> None:
        try:
            response = await stream.receive_response()
        except TransportError as exc:
            response = ConnectResponse(error=f"the connector connection failed: {exc}",
                                       metadata=[])
        await peer.send_response(response)
        if not response.error:
            await pump(stream, peer)

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(up())
            tg.create_task(down())
    except* (TransportError, ConnectionError):
        for side in (peer, stream):
            with contextlib.suppress(Exception):
                side.reset(0)


async def pump(src: ByteStream, dst: ByteStream) -> None:
    while True:
        data = await src.read(65536)
        if not data:
            dst.write_eof()
            return
        await dst.write(data)
