"""aioquic 1.x backend: the fallback; needs the X25519MLKEM768 patch to serve cloudflared.

Private state used (pinned to aioquic<1.8): ``QuicConnection._streams``,
``_local_max_streams_bidi``, ``_write_stream_limits`` (wrapped per instance),
``QuicStreamSender._buffer`` (bytes not yet acknowledged), ``tls._x25519_private_key`` and
the protocol's ``_timer``/``_transmit_task``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any, cast

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer as _AioquicServer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from . import _aioquic_mlkem
from ._backend import (
    ALPN,
    Backend,
    CreditFn,
    OwnerFactory,
    QuicSettings,
    TunnelProtocol,
    held_back_limit,
)
from ._protocol import ProtocolHooks
from ._udp import open_endpoint

log = logging.getLogger(__name__)


class _Protocol(ProtocolHooks, QuicConnectionProtocol):
    """The library's protocol with our hooks (see _protocol.py)."""


class _ClientConnection(QuicConnection):
    """Client that can use a zero-length connection ID like quic-go."""

    zero_length_cid = False

    def _replenish_connection_ids(self) -> None:
        if not self.zero_length_cid:  # with an empty CID there is nothing to issue (RFC 9000)
            super()._replenish_connection_ids()


class AioquicBackend(Backend):
    name = "aioquic"

    def __init__(self) -> None:
        self.mlkem_error = _aioquic_mlkem.apply()

    def _base_configuration(self, settings: QuicSettings, is_client: bool) -> QuicConfiguration:
        return QuicConfiguration(
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
    ) -> QuicConfiguration:
        if settings.pq_key_share_only:
            raise ValueError("pq_key_share_only needs the qh3 backend (aioquic client has no PQ)")
        config = self._base_configuration(settings, is_client=True)
        config.server_name = server_name
        if settings.zero_length_cid:
            config.connection_id_length = 0
        if cafile is not None or cadata is not None:
            config.load_verify_locations(cafile=cafile, cadata=cadata)
        if not verify:
            config.verify_mode = ssl.CERT_NONE
        return config

    def server_configuration(
        self, settings: QuicSettings, certfile: str, keyfile: str
    ) -> QuicConfiguration:
        if self.mlkem_error is not None:
            log.warning("aioquic edge without X25519MLKEM768: %s", self.mlkem_error)
        config = self._base_configuration(settings, is_client=False)
        config.load_cert_chain(certfile, keyfile)
        return config

    def new_client(self, configuration: Any, settings: QuicSettings) -> QuicConnection:
        quic = _ClientConnection(configuration=configuration)
        quic.zero_length_cid = settings.zero_length_cid
        return quic

    def protocol(self, quic: Any, owner_factory: OwnerFactory) -> TunnelProtocol:
        return _Protocol(quic, owner_factory)

    async def create_client_endpoint(
        self, protocol: TunnelProtocol, local: tuple[str, int]
    ) -> asyncio.DatagramTransport:
        family = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(local)
            transport, _ = await open_endpoint(
                lambda: cast(asyncio.DatagramProtocol, protocol), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        return transport

    async def serve(
        self, host: str, port: int, configuration: Any, owner_factory: OwnerFactory
    ) -> _AioquicServer:
        _, server = await open_endpoint(
            lambda: _AioquicServer(
                configuration=configuration,
                create_protocol=lambda quic, **_: _Protocol(quic, owner_factory),
            ),
            local_addr=(host, port),
        )
        return server

    def prepare_connection(self, quic: Any, settings: QuicSettings, credit: CreditFn) -> None:
        limit = quic._local_max_streams_bidi
        limit.value = limit.sent = max(limit.value, settings.max_incoming_streams)
        original = quic._write_stream_limits

        # aioquic calls this for every stream in every packet and doubles the window when the
        # peer has sent half of it; hold it at "read + window" for streams the app still reads.
        def write_stream_limits(builder: Any, space: Any, stream: Any) -> None:
            if stream.max_stream_data_local and not stream.receiver.is_finished:
                target = credit(stream.stream_id)
                if target is not None:
                    stream.max_stream_data_local = held_back_limit(
                        target, stream.receiver.highest_offset
                    )
            original(builder=builder, space=space, stream=stream)

        quic._write_stream_limits = write_stream_limits

    def send_buffer_size(self, quic: Any, stream_id: int) -> int:
        stream = quic._streams.get(stream_id)
        return 0 if stream is None else len(stream.sender._buffer)

    def cipher(self, quic: Any) -> str | None:
        schedule = getattr(quic.tls, "key_schedule", None)
        return None if schedule is None else schedule.cipher_suite.name

    def tls_group(self, quic: Any) -> str | None:
        tls = quic.tls
        if quic._is_client:
            return None
        key = tls._x25519_private_key
        if key is not None:
            hybrid = getattr(key, "ciphertext", None) is not None
            return "X25519MLKEM768" if hybrid else "x25519"
        if tls._ec_private_keys:
            return str(tls._ec_private_keys[0].curve.name)
        return None
