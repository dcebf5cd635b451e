"""What the asyncio layer needs from a QUIC library, and the shared settings.

qh3 and aioquic share the sans-I/O ``QuicConnection`` API (same method and event names), so
the connection layer calls it directly and :class:`Backend` writes configurations and
endpoints once. Only what differs or reaches into private state lives in an adapter
(``_qh3.py``, ``_aioquic.py``): send-buffer size, how receive credit is held back until the
application reads, stream limits, TLS details and the protocol's event pump and timers.
"""

from __future__ import annotations

import abc
import asyncio
import functools
import ipaddress
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from nbtunnel.transport.quic.udp import open_endpoint

ALPN = "argotunnel"
DEFAULT_SERVER_NAME = "quic.cftunnel.com"

LOOPBACK_DATAGRAM_ENV = "NBTUNNEL_QUIC_LOOPBACK_DATAGRAM"
LOOPBACK_DATAGRAM_DEFAULT = 16384
"""Datagram size probed for between loopback addresses unless the environment says otherwise."""


def _env_size(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    try:
        return max(0, int(value)) if value else default
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a size in bytes (0: off)") from None


# Target credit for a stream id, or None to leave the library's own window logic alone.
CreditFn = Callable[[int], "int | None"]


@dataclass
class QuicSettings:
    """Transport knobs; defaults mirror cloudflared (quic-go) where it has an opinion."""

    idle_timeout: float = 5.0
    """MaxIdleTimeout transport parameter (cloudflared: 5 s)."""
    keepalive: float | None = 1.0
    """Client PING period (cloudflared: 1 s); None disables it. Servers never ping."""
    handshake_timeout: float = 5.0
    max_datagram_frame_size: int = 16383
    stream_high_water: int = 1 << 20
    """write() blocks while the library holds more than this for the stream..."""
    stream_low_water: int = 256 << 10
    """...and resumes once it is below this."""
    stream_receive_window: int = 4 << 20
    """Per-stream credit beyond what the application has read (real receive back-pressure)."""
    connection_receive_window: int = 16 << 20
    max_incoming_streams: int = 1024
    """Concurrent bidi streams the peer may open (cloudflared allows ~unlimited)."""
    backend: str | None = None
    reuse_port: bool = False
    """Server: bind with SO_REUSEPORT, so several processes share the port (edge --workers)."""
    zero_length_cid: bool = False
    """Client: use a zero-length source connection ID, as quic-go (cloudflared) does."""
    pq_key_share_only: bool = False
    """Client: offer only an X25519MLKEM768 key share, like cloudflared's Go TLS (qh3 only)."""
    loopback_datagram_size: int = field(
        default_factory=lambda: _env_size(LOOPBACK_DATAGRAM_ENV, LOOPBACK_DATAGRAM_DEFAULT))
    """With a peer on a loopback address only (an edge and a connector on one host: the
    notebook's embedded edge, the lab, the benches): probe the path MTU up to this UDP payload
    size (qh3 only; default 16384, at most that: qh3's STREAM frames cannot be longer; 0: off,
    1452 bytes at most as quic-go; ``NBTUNNEL_QUIC_LOOPBACK_DATAGRAM`` sets it for a whole
    process). Loopback carries 64 KiB datagrams, so a bulk transfer costs ~11x fewer packets,
    and qh3's per-packet Python work is most of a transfer's CPU. Real probing (4096, then
    this size, after qh3's 1350 and 1452): a lost probe stops it, and the peer's
    max_udp_payload_size caps it (quic-go, so cloudflared, announces 1452: our edge never
    sends it more). Never used towards a non-loopback address (so never towards
    Cloudflare's edge)."""

class ProtocolOwner(abc.ABC):
    """The typed callbacks a backend protocol forwards to (implemented by QuicTunnelConnection)."""

    @abc.abstractmethod
    def _on_stream_data(self, stream_id: int, data: bytes, end_stream: bool) -> None: ...

    def _on_stream_chunks(self, stream_id: int, chunks: list[bytes], end_stream: bool) -> None:
        """Several packets' in-order data at once (``ProtocolHooks.chunk_event``)."""
        raise NotImplementedError

    @abc.abstractmethod
    def _on_stream_reset(self, stream_id: int, error_code: int) -> None: ...

    @abc.abstractmethod
    def _on_stop_sending(self, stream_id: int, error_code: int) -> None: ...

    @abc.abstractmethod
    def _on_datagram_frame(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def _on_handshake_completed(self, alpn: str | None) -> None: ...

    @abc.abstractmethod
    def _on_connection_terminated(self, error_code: int, reason: str) -> None: ...

    @abc.abstractmethod
    def _on_datagram(self, addr: Any, now: float) -> None:
        """A UDP datagram from ``addr`` arrived at loop time ``now`` (before the library
        parses it)."""

    @abc.abstractmethod
    def _before_transmit(self) -> None: ...

    @abc.abstractmethod
    def _after_transmit(self) -> None: ...


OwnerFactory = Callable[[Any, "TunnelProtocol"], ProtocolOwner]


class TunnelProtocol(Protocol):
    """Structural type of each backend's ``QuicConnectionProtocol`` subclass."""

    quic: Any
    owner: ProtocolOwner | None

    def transmit(self) -> None: ...

    def connect(self, addr: Any) -> None: ...

    def shutdown(self) -> None:
        """Cancel the library timer so nothing fires after the connection was dropped."""


class Backend(abc.ABC):
    """One QUIC library. Instances are created lazily by :func:`quic.get_backend`.

    Both libraries share the same public API (configuration, connection, protocol and server
    classes), so everything here is written once against the classes each adapter names;
    an adapter overrides what differs and what needs the library's private state.
    """

    name: str
    configuration_class: Any
    """The library's ``QuicConfiguration``."""
    client_class: Any
    """Our client ``QuicConnection`` subclass (zero-length connection IDs, key shares)."""
    protocol_class: Any
    """Our protocol: ``ProtocolHooks`` mixed into the library's ``QuicConnectionProtocol``."""
    server_class: Any
    """The library's ``QuicServer`` (a datagram protocol that demultiplexes connections)."""

    def _base_configuration(self, settings: QuicSettings, is_client: bool) -> Any:
        return self.configuration_class(
            is_client=is_client,
            alpn_protocols=[ALPN],
            idle_timeout=settings.idle_timeout,
            max_datagram_frame_size=settings.max_datagram_frame_size,
            max_stream_data=settings.stream_receive_window,
            max_data=settings.connection_receive_window,
        )

    def client_configuration(
        self,
        settings: QuicSettings,
        server_name: str,
        cafile: str | None,
        verify: bool,
        cadata: bytes | None = None,
    ) -> Any:
        """Client TLS: trust cafile and/or cadata (PEM) together, or the default store."""
        self._check_client(settings)
        config = self._base_configuration(settings, is_client=True)
        config.server_name = server_name
        if settings.zero_length_cid:
            config.connection_id_length = 0
        if cafile is not None or cadata is not None:
            config.load_verify_locations(cafile=cafile, cadata=cadata)
        if not verify:
            config.verify_mode = ssl.CERT_NONE
        return config

    def _check_client(self, settings: QuicSettings) -> None:
        """Raise ValueError for client settings this library cannot honour."""
        return None

    def server_configuration(self, settings: QuicSettings, certfile: str, keyfile: str) -> Any:
        config = self._base_configuration(settings, is_client=False)
        config.load_cert_chain(certfile, keyfile)
        return config

    def new_client(self, configuration: Any, settings: QuicSettings) -> Any:
        """A client ``QuicConnection`` (not yet connected)."""
        quic = self.client_class(configuration=configuration)
        quic.zero_length_cid = settings.zero_length_cid
        return quic

    def protocol(self, quic: Any, owner_factory: OwnerFactory) -> TunnelProtocol:
        return cast(TunnelProtocol, self.protocol_class(quic, owner_factory))

    async def create_client_endpoint(
        self, protocol: TunnelProtocol, local: tuple[str, int]
    ) -> asyncio.DatagramTransport:
        family = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(local)
            return await self._client_transport(
                lambda: cast(asyncio.DatagramProtocol, protocol), sock)
        except BaseException:
            sock.close()
            raise

    async def _client_transport(
        self, factory: Callable[[], asyncio.DatagramProtocol], sock: socket.socket
    ) -> asyncio.DatagramTransport:
        transport, _ = await open_endpoint(factory, sock=sock)
        return transport

    async def serve(
        self, host: str, port: int, configuration: Any, owner_factory: OwnerFactory,
        reuse_port: bool = False,
    ) -> tuple[asyncio.DatagramTransport, Any]:
        """Start the library's server on our UDP endpoint: (endpoint, the library's server)."""
        return await open_endpoint(
            lambda: self.server_class(
                configuration=configuration,
                create_protocol=lambda quic, **_: self.protocol_class(quic, owner_factory),
            ),
            local_addr=(host, port), reuse_port=reuse_port,
        )

    @abc.abstractmethod
    def prepare_connection(self, quic: Any, settings: QuicSettings, credit: CreditFn) -> None:
        """Raise stream limits and install the credit hook on a fresh QuicConnection."""

    @abc.abstractmethod
    def send_buffer_size(self, quic: Any, stream_id: int) -> int:
        """Bytes the library still holds for this stream (what back-pressure watches)."""

    @abc.abstractmethod
    def library_streams(self, quic: Any) -> int:
        """Streams the library still keeps state for (ended ones are discarded once both
        directions are over and acknowledged)."""

    def before_transmit(self, quic: Any, credit: CreditFn) -> None:
        """Hook run before each ``datagrams_to_send`` (qh3 needs it for credit control)."""
        return None

    def after_transmit(self, quic: Any) -> None:
        """Hook run after each ``datagrams_to_send``."""
        return None

    def after_handshake(self, quic: Any) -> None:
        """The handshake completed: drop what only the handshake needed. Both libraries keep
        three 16 KiB TLS output buffers per connection for its lifetime (~46 KiB of the
        edge's RSS per idle connection) that TLS writes only until its Finished."""
        return None

    def ack_with_data(self, quic: Any, now: float) -> None:
        """Stream data is about to go out: make a pending 1-RTT ACK due now so it rides in
        the same packet. Both libraries write an ACK only once its delay (1 ms) has run out,
        so a request/response exchange faster than that costs an ACK-only packet each way
        when the timer fires, although a data packet left just before."""
        return None

    def peer_address(self, quic: Any, settings: QuicSettings, addr: Any) -> None:
        """The peer's address is known (client: before connecting; server: at its first
        datagram, before the library reads it)."""
        return None

    def grant_credit(self, quic: Any, stream_id: int) -> None:
        """Make sure the library (re)considers this stream's MAX_STREAM_DATA."""
        return None

    def after_send_reset(self, quic: Any, stream_id: int) -> None:
        """The send side of ``stream_id`` was reset (by us, or by the library on the peer's
        STOP_SENDING): make sure no stream byte follows the RESET_STREAM's final size."""
        return None

    def cipher(self, quic: Any) -> str | None:
        return None

    def tls_group(self, quic: Any) -> str | None:
        return None


def is_loopback(addr: Any) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback addresses."""
    try:
        ip = ipaddress.ip_address(str(addr[0]).split("%", 1)[0])
    except (ValueError, IndexError, TypeError):
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool((mapped or ip).is_loopback)


def held_back_limit(target: int, highest_offset: int) -> int:
    """Value to store so the library's "double when half used" rule lands exactly on ``target``.

    Both libraries raise ``max_stream_data_local`` by doubling it whenever the peer has *sent*
    more than half of it, regardless of what the application has read. That removes receive
    back-pressure. Storing ``target // 2`` when the rule will fire (and ``target`` when it will
    not) makes the advertised limit ``target`` = bytes read + window, like quic-go.
    """
    if highest_offset * 2 > target:
        return target // 2
    return target


def share_epoch_sets(connection_module: Any) -> None:
    """Both libraries build every connection's frame-handler table with ``EPOCHS("...")``,
    a fresh frozenset per entry: about 7 KiB per connection for a few distinct immutable
    values. Memoising the module function shares them (an edge holds thousands of idle
    connections)."""
    epochs = getattr(connection_module, "EPOCHS", None)
    if callable(epochs) and not hasattr(epochs, "cache_info"):
        connection_module.EPOCHS = functools.lru_cache(maxsize=64)(epochs)
