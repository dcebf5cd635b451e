"""aioquic 1.x backend: the fallback; needs the X25519MLKEM768 patch to serve cloudflared.

Private state used (pinned to aioquic<1.8): ``QuicConnection._streams``, ``_spaces``
(a pending ACK's ``ack_at``), ``_crypto_buffers`` (dropped after the handshake),
``_local_max_streams_bidi``, ``_write_stream_limits`` (wrapped per instance),
``QuicStreamSender._buffer`` (bytes not yet acknowledged), ``tls._x25519_private_key`` /
``_ec_private_keys`` (which group was chosen) and the protocol's
``_process_events``/``_timer``/``_transmit_task``. Nothing outside this adapter (and
``_aioquic_mlkem``) touches aioquic's private state.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import aioquic.quic.connection as _aioquic_connection
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer as _AioquicServer
from aioquic.buffer import Buffer
from aioquic.quic import events as aioquic_events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.tls import Epoch

from nbtunnel.transport.quic import _aioquic_mlkem
from nbtunnel.transport.quic.backend import (
    Backend,
    CreditFn,
    QuicSettings,
    held_back_limit,
    share_epoch_sets,
)
from nbtunnel.transport.quic.protocol import ProtocolHooks

share_epoch_sets(_aioquic_connection)

log = logging.getLogger(__name__)


class _Protocol(ProtocolHooks, QuicConnectionProtocol):
    """The library's protocol with our hooks (see protocol.py)."""

    events = aioquic_events

    # private aioquic protocol state: its event pump and timers have no public API
    def _process_library_events(self) -> None:
        self._process_events()

    def _cancel_library_timers(self) -> None:
        for handle in (self._timer, self._transmit_task):
            if handle is not None:
                handle.cancel()
        self._timer = self._transmit_task = None


class _ClientConnection(QuicConnection):
    """Client that can use a zero-length connection ID like quic-go."""

    zero_length_cid = False

    def _replenish_connection_ids(self) -> None:
        if not self.zero_length_cid:  # with an empty CID there is nothing to issue (RFC 9000)
            super()._replenish_connection_ids()


class AioquicBackend(Backend):
    name = "aioquic"
    configuration_class = QuicConfiguration
    client_class = _ClientConnection
    protocol_class = _Protocol
    server_class = _AioquicServer

    def __init__(self) -> None:
        self.mlkem_error = _aioquic_mlkem.apply()

    def _check_client(self, settings: QuicSettings) -> None:
        if settings.pq_key_share_only:
            raise ValueError("pq_key_share_only needs the qh3 backend (aioquic client has no PQ)")

    def server_configuration(
        self, settings: QuicSettings, certfile: str, keyfile: str
    ) -> QuicConfiguration:
        if self.mlkem_error is not None:
            log.warning("aioquic edge without X25519MLKEM768: %s", self.mlkem_error)
        return cast(QuicConfiguration, super().server_configuration(settings, certfile, keyfile))

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

    def library_streams(self, quic: Any) -> int:
        return len(quic._streams)

    def send_buffer_size(self, quic: Any, stream_id: int) -> int:
        stream = quic._streams.get(stream_id)
        return 0 if stream is None else len(stream.sender._buffer)

    def after_handshake(self, quic: Any) -> None:
        # TLS wrote its last flight into these before the completion event was delivered
        quic._crypto_buffers = {epoch: Buffer(capacity=0) for epoch in quic._crypto_buffers}

    def ack_with_data(self, quic: Any, now: float) -> None:
        space = quic._spaces.get(Epoch.ONE_RTT)
        if space is not None and space.ack_at is not None and space.ack_at > now:
            space.ack_at = now

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
