"""One HA connection to the edge: dial, register on the control stream, serve the edge's streams.

Mirrors cloudflared's `serveQUIC` / `serveHTTP2` through the transport seam
(transport/base.py): the control stream carries the registration RPC; then the edge opens data
streams (and remote configuration pushes) toward us. Each stream is served in this
connection's TaskGroup; when the connection ends, `run()` returns and the supervisor decides
whether to reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from nbtunnel.connector.events import ConnectionEvent
from nbtunnel.connector.proxy import StreamProxy
from nbtunnel.core.errors import NbtunnelError, ProtocolError
from nbtunnel.core.registration import (
    CallFailed,
    LocalConfigurationAcked,
    PeerAborted,
    RegistrationClient,
    RegistrationResult,
    UnregisterCompleted,
)
from nbtunnel.core.schema import (
    ClientInfo,
    ConnectionDetails,
    ConnectionOptions,
    RegisterConnectionParams,
    RegistrationError,
    TunnelAuth,
)
from nbtunnel.transport.base import ControlStream, DataStream, TunnelConnection
from nbtunnel.transport.dial import dial
from nbtunnel.transport.errors import ConnectTimeoutError, HandshakeError, TransportError
from nbtunnel.transport.quic import QuicSettings

log = logging.getLogger("nbtunnel.connector")

RPC_TIMEOUT = 5.0


class RegistrationRefused(NbtunnelError):
    """The edge answered registerConnection with an error."""

    def __init__(self, error: RegistrationError) -> None:
        super().__init__(error.cause)
        self.error = error


class Dialer(Protocol):
    """How a connection reaches the edge (``transport.dial.dial``; tests pass a memory pair)."""

    async def __call__(self, protocol: str, host: str, port: int, *, cafile: str | None,
                       cadata: bytes | None = None, quic_server_name: str = ...,
                       quic_settings: QuicSettings | None = None) -> TunnelConnection: ...


@dataclass
class DialTarget:
    host: str
    port: int
    cafile: str | None
    server_name: str = "quic.cftunnel.com"
    cadata: bytes | None = None  # PEM roots, trusted together with cafile
    trust: str = ""  # what was trusted, for a failed handshake's message


def _with_trust(exc: HandshakeError, target: DialTarget) -> HandshakeError:
    """A certificate failure says which roots were trusted (same error class)."""
    text = str(exc)
    if isinstance(exc, ConnectTimeoutError) or not target.trust or not any(
            w in text.lower() for w in ("certificate", "issuer", "verify")):
        return exc
    return type(exc)(f"{text}; trusted: {target.trust}", exc.cause)


def _mapped_ip(host: str) -> bytes:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return b""
    if isinstance(addr, ipaddress.IPv4Address):
        return ipaddress.IPv6Address("::ffff:" + str(addr)).packed
    return addr.packed


class EdgeConnection:
    """A single connection's lifetime (one attempt); the supervisor loops over attempts."""

    def __init__(
        self,
        index: int,
        target: DialTarget,
        auth: TunnelAuth,
        tunnel_id: bytes,
        client: ClientInfo,
        proxy: StreamProxy,
        *,
        settings: QuicSettings,
        attempts: int,
        local_config: Callable[[], bytes],
        on_config: Callable[[int, bytes], tuple[int, str]],
        emit: Callable[[ConnectionEvent], None],
        protocol: str = "quic",
        dial: Dialer = dial,
    ) -> None:
        self.protocol = protocol
        self._dial = dial
        self.index = index
        self.target = target
        self.auth = auth
        self.tunnel_id = tunnel_id
        self.client = client
        self.proxy = proxy
        self.settings = settings
        self.attempts = attempts
        self.local_config = local_config
        self.on_config = on_config
        self.emit = emit
        self.conn: TunnelConnection | None = None
        self.details: ConnectionDetails | None = None
        self.registered = asyncio.Event()
        self._rpc = RegistrationClient()
        self._control: ControlStream | None = None
        self._unregistered = asyncio.Event()
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def edge(self) -> str:
        return f"{self.target.host}:{self.target.port}"

    async def run(self) -> None:
        """Dial, register and serve until the connection ends. Raises on dial/registration
        failure; returns normally when an established connection closes."""
        try:
            self.conn = conn = await self._dial(
                self.protocol, self.target.host, self.target.port, cafile=self.target.cafile,
                cadata=self.target.cadata, quic_server_name=self.target.server_name,
                quic_settings=self.settings,
            )
        except HandshakeError as exc:
            named = _with_trust(exc, self.target)
            if named is exc:
                raise
            raise named from exc
        try:
            async with asyncio.timeout(RPC_TIMEOUT):  # HTTP/2: the edge opens it
                control = await conn.control_stream()
            await self._register(control)
            await self._serve_streams(conn, control)
        finally:
            conn.close(0, "")

    async def _serve_streams(self, conn: TunnelConnection, control: ControlStream) -> None:
        """Read control-stream replies and serve every stream the edge opens, each in a task
        of its own, until the connection ends; then those tasks are cancelled and awaited.
        Not a TaskGroup: its done-callback per task is a loop callback per request, and a
        stream's task never fails (`_serve_stream` catches what a stream raises)."""
        loop = asyncio.get_running_loop()
        streams: set[asyncio.Task[None]] = set()
        reader = loop.create_task(self._read_control(control))
        reader.add_done_callback(_log_failure)
        try:
            while True:
                try:
                    stream = await conn.accept_stream()
                except TransportError:
                    break
                streams.add(loop.create_task(self._serve_stream(stream, streams)))
        finally:
            reader.cancel()
            for task in streams:
                task.cancel()
            await asyncio.gather(reader, *streams, return_exceptions=True)

    async def _register(self, control: ControlStream) -> None:
        """registerConnection on the control stream; then the local config on index 0."""
        self._control = control
        self._rpc.register(RegisterConnectionParams(
            auth=self.auth, tunnel_id=self.tunnel_id, conn_index=self.index,
            options=ConnectionOptions(client=self.client,
                                      origin_local_ip=_mapped_ip(self.target.host),
                                      num_previous_attempts=min(self.attempts, 255)),
        ))
        await control.write(self._rpc.data_to_send())
        async with asyncio.timeout(RPC_TIMEOUT):
            response = await self._await_registration(control)
        if isinstance(response, RegistrationError):
            raise RegistrationRefused(response)
        self.details = response
        self.registered.set()
        if self.index == 0 and not response.tunnel_is_remotely_managed:
            self._rpc.update_local_configuration(self.local_config())
            await control.write(self._rpc.data_to_send())

    async def _await_registration(
        self, control: ControlStream
    ) -> ConnectionDetails | RegistrationError:
        while True:
            data = await control.read(65536)
            if not data:
                raise ProtocolError("the edge closed the control stream during registration")
            for event in self._rpc.receive_data(data):
                if isinstance(event, RegistrationResult):
                    out = self._rpc.data_to_send()
                    if out:
                        await control.write(out)
                    return event.response
                if isinstance(event, CallFailed | PeerAborted):
                    raise ProtocolError(f"registration failed: {event.reason}")

    async def _read_control(self, control: ControlStream) -> None:
        """Answers to unregister/updateLocalConfiguration; any failure ends nothing else."""
        with contextlib.suppress(TransportError, ProtocolError):
            while data := await control.read(65536):
                for event in self._rpc.receive_data(data):
                    if isinstance(event, UnregisterCompleted):
                        self._unregistered.set()
                    elif isinstance(event, LocalConfigurationAcked):
                        log.debug("edge acknowledged the local configuration")
                    elif isinstance(event, CallFailed):
                        log.debug("control call failed: %s", event.reason)
                out = self._rpc.data_to_send()
                if out:
                    await control.write(out)

    async def _serve_stream(self, stream: DataStream, streams: set[asyncio.Task[None]]) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.in_flight += 1
        self._idle.clear()
        try:
            await self.proxy.handle(stream, self.index, self.on_config, task)
        except Exception:  # one broken stream must not end the connection
            log.exception("stream handler failed")
            with contextlib.suppress(Exception):
                stream.reset(0)
        finally:
            streams.discard(task)
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def unregister(self, grace: float) -> None:
        """Graceful shutdown: unregister, let in-flight requests finish, then close."""
        if self.conn is None or self.conn.closed or self._control is None:
            return
        if self.registered.is_set():
            self._rpc.unregister()
            with contextlib.suppress(TransportError):
                await self._control.write(self._rpc.data_to_send())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._unregistered.wait()
                    await self._idle.wait()
            log.info("Unregistered tunnel connection connIndex=%d", self.index)
            self._rpc.shutdown()
            with contextlib.suppress(TransportError):
                await self._control.write(self._rpc.data_to_send())
            self._control.finish()  # HTTP/2: RST_STREAM(NO_ERROR), as cloudflared
        self.conn.close(0, "")


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("control stream reader failed", exc_info=task.exception())
