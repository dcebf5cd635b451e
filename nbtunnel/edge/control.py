"""The edge side of one connector connection: registration on the control stream.

A connector opens client stream 0 right after the handshake and speaks Cap'n Proto RPC on it
(no preamble); over HTTP/2 the edge opens a control-stream request whose bodies carry the RPC.
We answer `registerConnection` after checking the tunnel id, account tag and secret against
the store; on success the connection joins the registry and the public front
may open data streams on it. `unregisterConnection` means drain: no new streams, and the
connection closes once its in-flight streams finish. Any registration error is answered and
the connection is closed, as cloudflared expects. A connection that has not registered within
`registration_timeout` is closed: unauthenticated peers cannot hold edge state for free.
cloudflared opens no stream but the control stream; any other stream a connector opens is reset
unread, so its bytes never sit in the edge's buffers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import time
import uuid
from collections.abc import Callable

from nbtunnel.core.errors import ProtocolError
from nbtunnel.core.registration import (
    LocalConfigurationReceived,
    PeerAborted,
    RegisterRequested,
    RegistrationServer,
    UnregisterRequested,
)
from nbtunnel.core.schema import ConnectionDetails, RegisterConnectionParams, RegistrationError
from nbtunnel.edge.clock import Clock
from nbtunnel.edge.registry import LiveConnection, Registry
from nbtunnel.edge.stores.base import ControlStore, StoreError
from nbtunnel.transport.base import ControlStream, TunnelConnection
from nbtunnel.transport.errors import TransportError

log = logging.getLogger("nbtunnel.edge.control")

CONTROL_STREAM_TIMEOUT = 10.0
LINGER = 0.25  # let a final RPC answer reach the connector before CONNECTION_CLOSE
DRAIN_LIMIT = 185.0  # cloudflared's longest grace period (3 min), plus a margin
REGISTRATION_TIMEOUT = 15.0  # cloudflared registers within milliseconds of its handshake


def _ip_text(raw: bytes) -> str:
    try:
        addr = ipaddress.ip_address(raw)
    except ValueError:
        return ""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return str(addr.ipv4_mapped)
    return str(addr)


class ControlHandler:
    """Serves the control stream of every connector connection the listener accepts."""

    def __init__(
        self,
        store: ControlStore,
        registry: Registry,
        *,
        location: str = "LOC",
        on_change: Callable[[str, LiveConnection], None] | None = None,
        registration_timeout: float = REGISTRATION_TIMEOUT,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.location = location
        self.on_change = on_change
        self.registration_timeout = registration_timeout
        self.clock = clock or Clock()

    async def check(self, params: RegisterConnectionParams) -> RegistrationError | None:
        """Validate credentials; the error text follows Cloudflare's 'Unauthorized' style."""
        if len(params.tunnel_id) != 16:
            return RegistrationError("Unauthorized: malformed tunnel id", should_retry=False)
        try:  # memory first; a tunnel created through another edge may only be in the database
            tunnel = await self.store.lookup_tunnel(uuid.UUID(bytes=params.tunnel_id))
        except StoreError as exc:
            log.warning("registration: store unavailable: %s", exc)
            return RegistrationError("Unavailable: the edge cannot check credentials now",
                                     should_retry=True)
        if tunnel is None:
            return RegistrationError("Unauthorized: Tunnel not found", should_retry=False)
        if tunnel.account_tag != params.auth.account_tag or not hmac.compare_digest(
            tunnel.secret, params.auth.tunnel_secret
        ):
            return RegistrationError("Unauthorized: Invalid tunnel secret", should_retry=False)
        return None

    async def serve(self, conn: TunnelConnection) -> None:
        """Run one connector connection until it closes (called by both listeners)."""
        try:
            stream = await asyncio.wait_for(conn.control_stream(), CONTROL_STREAM_TIMEOUT)
        except (TimeoutError, TransportError):
            conn.close(0, "no control stream")
            return
        async with asyncio.TaskGroup() as tasks:  # the deadline and the delayed closes
            deadline = tasks.create_task(self._registration_deadline(conn))
            refuser = tasks.create_task(self._refuse_peer_streams(conn))
            try:
                await self._serve_control(conn, stream, deadline, tasks)
            finally:
                deadline.cancel()
                refuser.cancel()

    async def _refuse_peer_streams(self, conn: TunnelConnection) -> None:
        """Reset every further stream the connector opens (STOP_SENDING drops its data)."""
        with contextlib.suppress(TransportError):  # closed, or HTTP/2 (the edge opens all)
            while True:
                stream = await conn.accept_stream()
                log.debug("connector %s opened a stream besides the control stream; reset",
                          conn.remote_address)
                stream.reset(0)

    async def _registration_deadline(self, conn: TunnelConnection) -> None:
        """Close `conn` unless it registers (which cancels this) in time."""
        await self.clock.sleep(self.registration_timeout)
        log.warning("connection from %s did not register within %gs; closing",
                    conn.remote_address, self.registration_timeout)
        conn.close(0, f"no registration within {self.registration_timeout:g}s")

    async def _serve_control(self, conn: TunnelConnection, stream: ControlStream,
                             deadline: asyncio.Task[None], closers: asyncio.TaskGroup) -> None:
        """Registration RPC over the control stream, then drain."""
        rpc = RegistrationServer()
        live: LiveConnection | None = None
        try:
            while True:
                data = await stream.read(65536)
                if not data:
                    break
                try:
                    events = rpc.receive_data(data)
                except ProtocolError as exc:
                    log.warning("control stream from %s: %s", conn.remote_address, exc)
                    await self._flush(stream, rpc)
                    conn.close(0x1, f"control stream protocol error: {exc}"[:200])
                    return
                for event in events:
                    if isinstance(event, RegisterRequested):
                        live = await self._register(conn, rpc, event, live, closers)
                        if live is not None:
                            deadline.cancel()
                    elif isinstance(event, UnregisterRequested):
                        rpc.answer_empty(event.question_id)
                        if live is not None:
                            self._drain(live, closers)
                    elif isinstance(event, LocalConfigurationReceived):
                        if live is not None:
                            live.local_config = event.config
                        rpc.answer_empty(event.question_id)
                    elif isinstance(event, PeerAborted):
                        log.debug("connector aborted RPC: %s", event.reason)
                await self._flush(stream, rpc)
        except TransportError:
            pass  # the control stream or the whole connection broke
        try:
            # HTTP/2: after a graceful GOAWAY its accepted streams still finish
            if live is not None and not conn.terminated:
                await self._wait_drained(conn, live, closers)
        finally:
            if live is not None:
                self.registry.remove(live)
                log.info(
                    "connection %s (tunnel %s, index %d) closed: %s",
                    live.connection_id, live.tunnel_id, live.conn_index,
                    conn.close_reason or "control stream ended",
                )
                if self.on_change:
                    self.on_change("closed", live)

    async def _flush(self, stream: ControlStream, rpc: RegistrationServer) -> None:
        out = rpc.data_to_send()
        if out:
            await stream.write(out)

    async def _register(
        self, conn: TunnelConnection, rpc: RegistrationServer, event: RegisterRequested,
        current: LiveConnection | None, closers: asyncio.TaskGroup,
    ) -> LiveConnection | None:
        params = event.params
        error = await self.check(params)
        if error is None and current is not None:
            error = RegistrationError("EDUPCONN", should_retry=True)
        if error is not None:
            log.warning("registration refused from %s: %s", conn.remote_address, error.cause)
            rpc.answer_register(event.question_id, error)
            closers.create_task(_close_after_linger(conn, error.cause[:200]))
            return current
        tunnel_id = uuid.UUID(bytes=params.tunnel_id)
        client = params.options.client
        connector_id = (
            uuid.UUID(bytes=client.client_id) if len(client.client_id) == 16 else uuid.uuid4()
        )
        # A reconnect of the same connector and index replaces the stale connection.
        for old in self.registry.connections(tunnel_id):
            if old.connector_id == connector_id and old.conn_index == params.conn_index:
                self.registry.remove(old)
                old.transport.close(0, "replaced by a newer connection")
        live = LiveConnection(
            tunnel_id=tunnel_id,
            conn_index=params.conn_index,
            connector_id=connector_id,
            connection_id=uuid.uuid4(),
            protocol=conn.protocol,
            edge_location=self.location,
            origin_ip=conn.remote_address[0],
            client_version=client.version,
            client_arch=client.arch,
            features=list(client.features),
            opened_at=time.time(),
            transport=conn,
        )
        rpc.answer_register(
            event.question_id,
            ConnectionDetails(uuid=live.connection_id.bytes, location_name=self.location),
        )
        self.registry.add(live)
        log.info(
            "registered connection %s: tunnel %s index %d from %s (client %s %s, %s)",
            live.connection_id, tunnel_id, live.conn_index, conn.remote_address[0],
            client.version, client.arch, _ip_text(params.options.origin_local_ip) or "-",
        )
        if self.on_change:
            self.on_change("registered", live)
        return live

    async def _wait_drained(self, conn: TunnelConnection, live: LiveConnection,
                            closers: asyncio.TaskGroup) -> None:
        """The control stream ended but the connection is still up: keep it for its requests.

        cloudflared closes its control stream right after `unregisterConnection` and then
        waits up to its grace period for in-flight requests on the still-open connection;
        closing the connection here would cut them off. Drain, and return once the
        connection is closed (by `_drain`/the last request, or by the connector).
        """
        self._drain(live, closers)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn.wait_closed(), DRAIN_LIMIT)

    def _drain(self, live: LiveConnection, closers: asyncio.TaskGroup) -> None:
        """Unregister: stop routing to it, close once in-flight requests are done."""
        if live.draining:
            return
        live.draining = True
        log.info("connection %s unregistered; draining %d in-flight", live.connection_id,
                 live.in_flight)
        if self.on_change:
            self.on_change("draining", live)
        if live.in_flight == 0:
            closers.create_task(_close_after_linger(live.transport, "unregistered"))


async def _close_after_linger(conn: TunnelConnection, reason: str) -> None:
    """Let a final RPC answer reach the connector, then close."""
    await asyncio.sleep(LINGER)
    conn.close(0, reason)
