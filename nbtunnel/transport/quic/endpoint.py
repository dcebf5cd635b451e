"""Dial and listen over QUIC (qh3 by default, or aioquic).

The library is chosen here and only here (``QuicSettings.backend``); its modules are imported
lazily by :func:`get_backend`. qh3 is pinned to 1.9.x: 2.x cannot serve cloudflared (it mishandles
the zero-length client connection IDs quic-go uses). aioquic needs the X25519MLKEM768 patch in
``_aioquic_mlkem`` to answer cloudflared's ClientHello; it is applied when aioquic is first used.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from nbtunnel.transport.errors import ConnectTimeoutError, HandshakeError, TransportError
from nbtunnel.transport.handlers import ConnectionHandlers
from nbtunnel.transport.quic.backend import (
    DEFAULT_SERVER_NAME,
    Backend,
    QuicSettings,
    TunnelProtocol,
)
from nbtunnel.transport.quic.connection import QuicTunnelConnection

log = logging.getLogger(__name__)

BACKENDS = ("qh3", "aioquic")
"""Supported libraries, most preferred first."""

_instances: dict[str, Backend] = {}


def _usable(name: str) -> bool:
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    major = int(version.split(".")[0])
    return major < 2  # qh3 >= 2 cannot serve cloudflared; aioquic is pinned < 1.8 anyway


def available_backends() -> list[str]:
    """Installed, supported backends in preference order."""
    return [name for name in BACKENDS if _usable(name)]


def get_backend(name: str | None = None) -> Backend:
    """The backend called ``name`` (default: the first available one)."""
    if name is None:
        names = available_backends()
        if not names:
            raise TransportError("no QUIC library: install qh3>=1.9.4,<2 (or aioquic<1.8)")
        name = names[0]
    if name not in _instances:
        if name not in BACKENDS or not _usable(name):
            raise TransportError(f"QUIC backend {name!r} is not available ({available_backends()})")
        if name == "qh3":
            from nbtunnel.transport.quic._qh3 import Qh3Backend

            _instances[name] = Qh3Backend()
        else:
            from nbtunnel.transport.quic._aioquic import AioquicBackend

            _instances[name] = AioquicBackend()
    return _instances[name]


async def connect(
    host: str,
    port: int,
    *,
    server_name: str = DEFAULT_SERVER_NAME,
    cafile: str | None = None,
    cadata: bytes | None = None,
    verify: bool = True,
    settings: QuicSettings | None = None,
    local_port: int = 0,
) -> QuicTunnelConnection:
    """Dial an edge like cloudflared does; raises HandshakeError / ConnectTimeoutError.

    Trust: ``cafile`` and/or ``cadata`` (PEM bytes) together; neither means the system store.
    """
    settings = settings or QuicSettings()
    backend = get_backend(settings.backend)
    configuration = backend.client_configuration(settings, server_name, cafile, verify, cadata)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as exc:
        raise HandshakeError(f"cannot resolve {host}:{port}: {exc}", exc) from exc
    family, addr = infos[0][0], infos[0][4]
    local = ("::" if family == socket.AF_INET6 else "0.0.0.0", local_port)
    quic = backend.new_client(configuration, settings)
    conns: list[QuicTunnelConnection] = []

    def owner_factory(quic: Any, protocol: TunnelProtocol) -> QuicTunnelConnection:
        conns.append(QuicTunnelConnection(backend, quic, protocol, settings))
        return conns[0]

    protocol = backend.protocol(quic, owner_factory)
    conn = conns[0]
    try:
        transport = await backend.create_client_endpoint(protocol, local)
    except OSError as exc:
        conn._abort(f"cannot open UDP socket: {exc}")
        raise HandshakeError(f"cannot open UDP socket {local}: {exc}", exc) from exc
    conn._attach_transport(transport)
    conn.remote_address = (str(addr[0]), int(addr[1]))
    backend.peer_address(quic, settings, addr)
    try:
        protocol.connect(addr)
        await conn._wait_handshake()
    except (HandshakeError, ConnectTimeoutError):
        conn._abort("handshake failed")
        raise
    except BaseException:
        conn._abort("connect cancelled")
        raise
    return conn


class QuicServer:
    """A listening QUIC endpoint; owns its connections and their ``on_connection`` tasks."""

    def __init__(
        self,
        backend: Backend,
        settings: QuicSettings,
        on_connection: Callable[[QuicTunnelConnection], Awaitable[None]],
    ) -> None:
        self._backend = backend
        self._settings = settings
        self._handlers = ConnectionHandlers(on_connection)
        self._connections: set[QuicTunnelConnection] = set()
        self._server: Any = None
        self._closing = False
        self.sockname: tuple[str, int] = ("", 0)

    @property
    def connections(self) -> frozenset[QuicTunnelConnection]:
        return frozenset(self._connections)

    async def close(self) -> None:
        """Close every connection (CONNECTION_CLOSE), cancel and await handlers, drop the socket."""
        if self._closing:
            return
        self._closing = True
        for conn in list(self._connections):
            conn.close(0, "edge shutting down")
        await self._handlers.aclose()
        for conn in list(self._connections):
            conn._abort("server closed")
        if self._server is not None:
            self._server.close()
        await asyncio.sleep(0)  # let the transport run connection_lost

    async def __aenter__(self) -> QuicServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _new_connection(self, quic: Any, protocol: TunnelProtocol) -> QuicTunnelConnection:
        conn = QuicTunnelConnection(
            self._backend,
            quic,
            protocol,
            self._settings,
            on_handshake=self._spawn,
            on_terminated=self._connections.discard,
        )
        conn.local_address = self.sockname
        self._connections.add(conn)
        return conn

    def _spawn(self, conn: QuicTunnelConnection) -> None:
        if self._closing:
            conn.close(0, "edge shutting down")
            return
        self._handlers.spawn(conn)


async def serve(
    host: str,
    port: int,
    *,
    certfile: str,
    keyfile: str,
    on_connection: Callable[[QuicTunnelConnection], Awaitable[None]],
    settings: QuicSettings | None = None,
) -> QuicServer:
    """Listen for QUIC (ALPN ``argotunnel``, datagrams on); one handler task per connection."""
    settings = settings or QuicSettings()
    backend = get_backend(settings.backend)
    configuration = backend.server_configuration(settings, str(certfile), str(keyfile))
    server = QuicServer(backend, settings, on_connection)
    endpoint, server._server = await backend.serve(host, port, configuration,
                                                   server._new_connection,
                                                   reuse_port=settings.reuse_port)
    sockname = endpoint.get_extra_info("sockname")
    server.sockname = (str(sockname[0]), int(sockname[1]))
    return server
