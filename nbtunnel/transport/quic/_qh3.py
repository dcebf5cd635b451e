"""qh3 1.9.x backend: the default, because it serves cloudflared without any TLS patch.

Private state used (pinned to qh3>=1.9.4,<2): ``QuicConnection._streams``, ``_spaces``
(a pending ACK's ``ack_at``), ``_crypto_buffers`` (dropped after the handshake),
``_streams_dirty_limits``, ``_streams_finished`` (replaced, see ``FinishedStreams``),
``_local_max_streams_bidi``, ``QuicStream.max_stream_data_local*``,
``QuicStreamSender._pending`` (Rust; bytes not yet sent or waiting for retransmission),
``tls._supported_groups``, the TLS private keys (which group was chosen), the send queue
``_streams_queue`` and the protocol's ``_process_events``/``_timer``/``_transmit_task``.
Nothing outside this adapter touches qh3's private state.

Path MTU: qh3 probes (1350, then 1452 bytes, capped by the peer's max_udp_payload_size) only
as a client; ``prepare_connection`` turns the same probing on for our server side, so the
edge's sends grow past 1280 bytes as quic-go's do. ``_Server`` hands a 1-RTT packet straight to
the protocol that owns its connection ID (qh3's server parses every packet's header into a
``QuicHeader`` first, which the connection then does again), and a GRO train's run of them
in one call (``datagrams_received``).

Per packet, connections take the lean paths of ``_qh3_lean`` (sending, receiving, ACKs) in
steady state: ``prepare_connection`` switches qh3's connection and recovery classes to them.

Pacing: qh3's pacer wakes the connection one packet time after its bucket (at most 16
packets) runs dry, tens of microseconds on a fast path, so a bulk sender ran a timer callback
and a whole ``datagrams_to_send`` per handful of packets. ``_Pacer`` keeps qh3's rate
(congestion window / smoothed RTT) with quic-go's granularity: bursts of up to 2 ms of that
rate (at least 10 packets) and at least 1 ms between wake-ups.

``QuicSettings.loopback_datagram_size`` extends the probe sizes towards a loopback peer
(``peer_address``); a client then also advertises that size as its max_udp_payload_size
(qh3 hard-codes 1472), or the server's probes would be capped below it.

qh3 reports a STREAM frame that arrives after the stream's receiving side is over (a
retransmission after the FIN, data after a reset) as one more event, which our connection
took for a new stream: ``LeanConnection._stream_frame_once`` drops it, as aioquic does.

qh3's sender keeps transmitting (and retransmitting) bytes it buffered before a reset,
past the RESET_STREAM's final size: the peer then closes the whole connection with
FINAL_SIZE_ERROR. ``after_send_reset`` puts a guard in front of such a sender (aioquic drops
the buffer on reset itself). And qh3 can drop a stream from its send queue when a
RESET_STREAM or STOP_SENDING frame does not fit in a packet, leaking the stream on both
peers: ``after_transmit`` puts it back (see ``requeue_dropped_streams``).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any, cast

import qh3.quic.connection as _qh3_connection
from qh3._hazmat import Buffer, RangeSet
from qh3.asyncio._transport import create_optimized_datagram_transport  # GRO/GSO, as qh3.connect
from qh3.asyncio.protocol import QuicConnectionProtocol
from qh3.asyncio.server import QuicServer as _Qh3Server
from qh3.quic import events as qh3_events
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.connection import QuicConnection
from qh3.quic.packet_builder import MTU_PROBE_SIZES
from qh3.quic.recovery import QuicCongestionControl, QuicPacketRecovery
from qh3.tls import Epoch, Group

from nbtunnel.transport.quic._qh3_lean import (
    LeanConnection,
    LeanCubic,
    LeanRecovery,
    StreamChunks,
)
from nbtunnel.transport.quic.backend import (
    Backend,
    CreditFn,
    QuicSettings,
    held_back_limit,
    is_loopback,
    share_epoch_sets,
)
from nbtunnel.transport.quic.protocol import ProtocolHooks

share_epoch_sets(_qh3_connection)

MAX_DATAGRAM = 16384
"""Largest datagram we let qh3 build: it writes a STREAM frame's length as a 2-byte varint
(at most 16383), so bigger packets come out malformed (the peer closes with FRAME_ENCODING)."""
LOOPBACK_PROBE_SIZES = (4096,)
"""Steps between qh3's probes and ``loopback_datagram_size`` (a lost probe stops at the last
size that got through)."""
PACING_MIN_DELAY = 0.001
PACING_BURST_TIME = 0.002
PACING_BURST_PACKETS = 10
"""quic-go's pacer: MinPacingDelay 1 ms; a burst is MinPacingDelay + TimerGranularity (1 ms)
worth of the pacing rate, and at least maxBurstSizePackets (10)."""


class _Protocol(ProtocolHooks, QuicConnectionProtocol):
    """The library's protocol with our hooks (see protocol.py)."""

    events = qh3_events
    chunk_event = StreamChunks

    # private qh3 protocol state: its event pump and timers have no public API
    def _process_library_events(self) -> None:
        self._process_events()

    def _cancel_library_timers(self) -> None:
        for handle in (self._timer, self._transmit_task):
            if handle is not None:
                handle.cancel()
        self._timer = self._transmit_task = None


class _Server(_Qh3Server):
    """qh3's server with a direct path for short-header (1-RTT) packets of known connections.

    Everything else (long headers, unknown connection IDs: new connections, version
    negotiation, stray packets) takes qh3's own path unchanged.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._cid_end = 1 + self._configuration.connection_id_length

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        if isinstance(data, bytes) and data and not data[0] & 0x80:
            protocol = self._protocols.get(data[1:self._cid_end])
            if protocol is not None:
                protocol.datagram_received(data, addr)
                return
        super().datagram_received(data, addr)

    def datagrams_received(self, datagrams: list[bytes], addr: Any) -> None:
        """A GRO train from one peer: runs of 1-RTT packets for one connection go to its
        protocol together (``ProtocolHooks.datagrams_received``), in order with the rest."""
        protocols = self._protocols
        cid_end = self._cid_end
        run: list[bytes] = []
        owner: Any = None
        for data in datagrams:
            protocol = protocols.get(data[1:cid_end]) if data and not data[0] & 0x80 else None
            if protocol is not owner or protocol is None:
                if run:
                    owner.datagrams_received(run, addr)
                    run = []
                owner = protocol
                if protocol is None:
                    super().datagram_received(data, addr)
                    continue
            run.append(data)
        if run:
            owner.datagrams_received(run, addr)


class _Pacer:
    """qh3's pacing rate with quic-go's burst size and timer granularity (see the module
    docstring); same interface as qh3's ``QuicPacketPacer``. A token bucket in seconds of
    sending: a packet costs one packet time (datagram size / rate) and goes out only when the
    bucket holds it (qh3's let a packet out on any credit left, ~8 % over the rate)."""

    __slots__ = ("_quic", "bucket_max", "bucket_time", "evaluation_time", "packet_time")

    def __init__(self, quic: Any) -> None:
        self._quic = quic
        self.bucket_max = 0.0
        self.bucket_time = 0.0
        self.evaluation_time = 0.0
        self.packet_time: float | None = None

    def start_pacing(self, now: float, congestion_window: int, smoothed_rtt: float) -> None:
        self.update_rate(congestion_window, smoothed_rtt)
        self.evaluation_time = now
        self.bucket_time = self.bucket_max

    def next_send_time(self, now: float) -> float | None:
        if self.packet_time is None:
            return None
        self.update_bucket(now)
        if self.bucket_time >= self.packet_time * 0.999:  # (float sums of packet times)
            return None
        return now + max(self.packet_time - self.bucket_time, PACING_MIN_DELAY)

    def update_after_send(self, now: float) -> None:
        if self.packet_time is not None:
            self.update_bucket(now)
            self.bucket_time = max(0.0, self.bucket_time - self.packet_time)

    def allowance(self, now: float) -> int:
        """How many packets may leave at ``now`` (``next_send_time`` asked before each)."""
        if self.packet_time is None:
            return 1 << 30
        self.update_bucket(now)
        return int(self.bucket_time / self.packet_time + 0.001)

    def spend(self, packets: int) -> None:
        """``update_after_send`` for ``packets`` packets sent at the last ``allowance`` time."""
        if packets and self.packet_time is not None:
            self.bucket_time = max(0.0, self.bucket_time - packets * self.packet_time)

    def update_bucket(self, now: float) -> None:
        if now > self.evaluation_time:
            self.bucket_time = min(self.bucket_time + now - self.evaluation_time,
                                   self.bucket_max)
            self.evaluation_time = now

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        rate = congestion_window / max(smoothed_rtt, 1e-6)  # bytes per second
        self.packet_time = max(1e-6, min(self._quic._max_datagram_size / rate, 1.0))
        self.bucket_max = max(PACING_BURST_PACKETS * self.packet_time, PACING_BURST_TIME)
        self.bucket_time = min(self.bucket_time, self.bucket_max)


class _ResetSender:
    """Stands in for a reset stream's Rust ``QuicStreamSender``: the library sees an empty
    buffer and gets no frame, so only the RESET_STREAM (and its retransmissions) go out."""

    __slots__ = ("_inner",)
    buffer_is_empty = True

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def prepare_stream_frame(self, flight_space: int, max_offset: int) -> None:
        return None

    def get_frame(self, max_size: int, max_offset: int | None = None) -> None:
        return None

    def on_data_delivery(self, delivery: int, start: int, stop: int) -> None:
        return None  # a lost frame of a reset stream is never resent

    def write(self, data: bytes, end_stream: bool = False) -> None:
        raise AssertionError("cannot call write() after reset()")

    @property
    def _pending(self) -> list[tuple[int, int]]:
        return []  # nothing will be sent: back-pressure must not wait for it


class FinishedStreams:
    """Stands in for qh3's ``_streams_finished``, the set of every discarded stream's ID
    (frames for them are ignored). qh3 adds one int per stream and never removes it: an HA
    connection of the soak held 20,000 after 90 s and grew by ~2 MiB each time the set's table
    doubled. Streams of one type end roughly in order, so their indices are kept as ranges:
    a handful, however many streams a connection carried."""

    __slots__ = ("_ranges",)

    def __init__(self) -> None:
        self._ranges = [RangeSet() for _ in range(4)]  # per type: the ID's two low bits

    def add(self, stream_id: int) -> None:
        self._ranges[stream_id & 3].add(stream_id >> 2)

    def __contains__(self, stream_id: object) -> bool:
        return isinstance(stream_id, int) and (stream_id >> 2) in self._ranges[stream_id & 3]

    def __len__(self) -> int:
        return sum(stop - start for ranges in self._ranges for start, stop in ranges)


def requeue_dropped_streams(quic: Any) -> None:
    """Put back the streams qh3 dropped from its send queue.

    qh3 1.9 serves streams from ``_streams_queue``, and a STOP_SENDING or RESET_STREAM frame
    that does not fit in the packet being built (the stream before it filled the packet) raises
    out of the loop after the stream was taken off the queue and before it is shelved again.
    That stream is then never visited: its RESET_STREAM / STOP_SENDING is never sent, so
    neither side can finish it, and it is never discarded either; both peers keep it, with
    whatever the sender still buffered (up to a whole response), for the life of the
    connection. Every stream in ``_streams`` belongs in the queue (qh3 adds to both and
    discards from both), so a shorter queue means such a drop; the next transmit sends what
    the dropped streams owe.
    """
    queued = {id(stream) for stream in quic._streams_queue}
    dropped = [stream for stream in quic._streams.values() if id(stream) not in queued]
    quic._streams_queue[:0] = dropped  # first in line: their frames were due already


class _ClientConnection(LeanConnection):
    """Client that can behave like quic-go: PQ-only key share, zero-length connection ID."""

    pq_only = False
    zero_length_cid = False
    receive_payload_size = 0
    """Advertise this max_udp_payload_size instead of qh3's 1472 (0: leave it)."""

    def _serialize_transport_parameters(self) -> bytes:
        data: bytes = super()._serialize_transport_parameters()
        if self.receive_payload_size:
            data = _with_max_udp_payload(data, self.receive_payload_size)
        return data

    def _replenish_connection_ids(self) -> None:
        if not self.zero_length_cid:  # with an empty CID there is nothing to issue (RFC 9000)
            super()._replenish_connection_ids()

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        if self.pq_only:
            self.tls._supported_groups = [Group.X25519ML768, Group.SECP256R1]


class Qh3Backend(Backend):
    name = "qh3"
    configuration_class = QuicConfiguration
    client_class = _ClientConnection
    protocol_class = _Protocol
    server_class = _Server

    def new_client(self, configuration: Any, settings: QuicSettings) -> QuicConnection:
        quic = super().new_client(configuration, settings)
        quic.pq_only = settings.pq_key_share_only
        return cast(QuicConnection, quic)

    async def _client_transport(
        self, factory: Callable[[], asyncio.DatagramProtocol], sock: socket.socket
    ) -> asyncio.DatagramTransport:
        transport, _ = await create_optimized_datagram_transport(
            asyncio.get_running_loop(), factory, sock=sock
        )
        return cast(asyncio.DatagramTransport, transport)

    def prepare_connection(self, quic: Any, settings: QuicSettings, credit: CreditFn) -> None:
        if type(quic) is QuicConnection:  # made by qh3's server: same layout (no new slots)
            quic.__class__ = LeanConnection
        if isinstance(quic, LeanConnection):
            quic.install_stream_frame_fix()
        limit = quic._local_max_streams_bidi
        limit.value = limit.sent = max(limit.value, settings.max_incoming_streams)
        quic._loss._pacer = _Pacer(quic)
        if type(quic._loss) is QuicPacketRecovery and type(quic._loss._cc) is QuicCongestionControl:
            quic._loss.__class__ = LeanRecovery  # same layout: no slots either way
            quic._loss._cc.__class__ = LeanCubic
        quic._streams_finished = FinishedStreams()
        if not quic._is_client and quic._configuration.probe_datagram_size:
            # the client's probing, for the server (capped once the client's transport
            # parameters arrive, with its first datagram: after this call)
            quic._mtu_probe_sizes = [s for s in MTU_PROBE_SIZES if s > quic._max_datagram_size]

    def library_streams(self, quic: Any) -> int:
        return len(quic._streams)

    def peer_address(self, quic: Any, settings: QuicSettings, addr: Any) -> None:
        size = min(settings.loopback_datagram_size, MAX_DATAGRAM)
        if size <= MTU_PROBE_SIZES[-1] or not is_loopback(addr):
            return
        if quic._is_client:
            if not quic._configuration.probe_datagram_size:
                return
            quic.receive_payload_size = size
        elif not quic._mtu_probe_sizes:
            return  # probing is off
        probes = [s for s in (*MTU_PROBE_SIZES, *LOOPBACK_PROBE_SIZES) if s < size]
        quic._mtu_probe_sizes = [s for s in (*probes, size) if s > quic._max_datagram_size]

    def send_buffer_size(self, quic: Any, stream_id: int) -> int:
        stream = quic._streams.get(stream_id)
        if stream is None:
            return 0
        return sum(stop - start for start, stop in stream.sender._pending)

    def before_transmit(self, quic: Any, credit: CreditFn) -> None:
        # qh3 raises MAX_STREAM_DATA only for streams in this set, doubling on the way.
        for stream in quic._streams_dirty_limits:
            target = credit(stream.stream_id)
            if target is not None and not stream.receiver.is_finished:
                stream.max_stream_data_local = held_back_limit(
                    target, stream.receiver.highest_offset
                )

    def after_transmit(self, quic: Any) -> None:
        # If no packet was built the halved value may still be stored: never go below what
        # was advertised, or the peer's legitimate data would trip our own flow control.
        for stream in quic._streams_dirty_limits:
            if stream.max_stream_data_local < stream.max_stream_data_local_sent:
                stream.max_stream_data_local = stream.max_stream_data_local_sent
        if len(quic._streams_queue) != len(quic._streams):
            requeue_dropped_streams(quic)

    def grant_credit(self, quic: Any, stream_id: int) -> None:
        stream = quic._streams.get(stream_id)
        if stream is not None and not stream.receiver.is_finished:
            quic._streams_dirty_limits.add(stream)

    def after_send_reset(self, quic: Any, stream_id: int) -> None:
        stream = quic._streams.get(stream_id)
        if stream is not None and not isinstance(stream.sender, _ResetSender):
            stream.sender = _ResetSender(stream.sender)

    def after_handshake(self, quic: Any) -> None:
        # TLS wrote its last flight into these before the completion event was delivered
        quic._crypto_buffers = {epoch: Buffer(capacity=0) for epoch in quic._crypto_buffers}

    def ack_with_data(self, quic: Any, now: float) -> None:
        space = quic._spaces.get(Epoch.ONE_RTT)
        if space is not None and space.ack_at is not None and space.ack_at > now:
            space.ack_at = now

    def cipher(self, quic: Any) -> str | None:
        suite = quic.get_cipher()
        return None if suite is None else getattr(suite, "name", str(suite))

    def tls_group(self, quic: Any) -> str | None:
        tls = getattr(quic, "tls", None)
        if tls is None or quic._is_client:
            return None  # a client keeps every share it offered: the choice is not recorded
        for attr, name in (
            ("_x25519_kyber_768_private_key", "X25519MLKEM768"),
            ("_x25519_private_key", "x25519"),
            ("_ec_p256_private_key", "secp256r1"),
            ("_ec_p384_private_key", "secp384r1"),
        ):
            if getattr(tls, attr, None) is not None:
                return name
        return None


def _with_max_udp_payload(params: bytes, size: int) -> bytes:
    """Encoded transport parameters with max_udp_payload_size (id 0x03) set to ``size``;
    every other parameter (GREASE included) is copied as it was."""
    buf = Buffer(data=params)
    out = Buffer(capacity=len(params) + 16)
    while not buf.eof():
        start = buf.tell()
        param_id = buf.pull_uint_var()
        buf.pull_bytes(buf.pull_uint_var())
        if param_id != 0x03:
            out.push_bytes(params[start:buf.tell()])
    value = Buffer(capacity=8)
    value.push_uint_var(size)
    out.push_uint_var(0x03)
    out.push_uint_var(len(value.data))
    out.push_bytes(value.data)
    return bytes(out.data)
