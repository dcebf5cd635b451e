"""Lean per-packet paths for qh3 1.9 connections in steady state (bulk transfers).

A bulk transfer is ~700 packets per MB, and qh3 runs general-purpose Python for each one:
every received packet goes through the whole ``receive_datagram`` (long-header, version,
retry, migration and logging checks), a frame-handler table and one ``StreamDataReceived``
event; every sent packet through ``QuicPacketBuilder``, every control-frame check of
``_write_application`` and a generic registration; every ACK sorts the packets in flight and
runs CUBIC once per packet. The classes here take shorter paths for the common case, with the
same steps and results, and leave everything else to qh3:

- **Receiving** (:class:`LeanConnection`): a datagram that holds one short-header packet for
  our current connection ID, from the current, validated path, once the handshake is complete
  (no qlog), is decrypted and recorded here as qh3 would (key phase, reserved bits, duplicate,
  spin bit, ACK queue; the idle timer once per batch, ``receive_datagrams``). STREAM frames for
  known streams are checked against the same limits; in-order data that needs no reassembly
  joins the previous event if that is the same stream's (:class:`StreamChunks`): one event per
  stream per receive batch, not per packet. Other frames go to qh3's own handlers; other
  packets (new paths or CIDs, decryption failures, key updates, closing) to qh3's
  ``receive_datagram``.
- **Sending**: when nothing but STREAM frames (and an ACK of one range) is due and no stream
  owes a RESET_STREAM or STOP_SENDING, packets are written, encrypted and registered with loss
  recovery straight from the send loop (same pacing, congestion window, flow control, stream
  order and packet layout); anything else is qh3's ``_write_application``.
- **ACKs** (:class:`LeanRecovery`, :class:`LeanCubic`): see their docstrings.

``LeanConnection`` adds no slots, so a server connection (created by qh3's server) is switched
to it with ``__class__``, as are the recovery objects. ``tests/transport/test_quic_lean.py``
compares each path with qh3's own, under loss, duplication and reordering.
"""

from __future__ import annotations

import math
from typing import Any

from qh3._hazmat import (
    Buffer,
    BufferReadError,
    pull_stream_frame,
    push_ack_frame,
    push_stream_frame_body,
)
from qh3.quic.connection import (
    END_STATES,
    QuicConnection,
    QuicConnectionError,
    QuicConnectionState,
    QuicReceiveContext,
)
from qh3.quic.crypto import CryptoError, KeyUnavailableError
from qh3.quic.packet import (
    NON_ACK_ELICITING_FRAME_TYPES,
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
)
from qh3.quic.packet_builder import QuicDeliveryState, QuicPacketBuilder, QuicSentPacket
from qh3.quic.recovery import (
    K_CUBIC_MAX_IDLE_TIME,
    K_HYSTART_CSS_GROWTH_DIVISOR,
    K_HYSTART_CSS_ROUNDS,
    QuicCongestionControl,
    QuicPacketRecovery,
)
from qh3.quic.stream import FinalSizeError, StreamFinishedError
from qh3.tls import Epoch

_CONNECTED = QuicConnectionState.CONNECTED
_ONE_RTT = Epoch.ONE_RTT
_PADDING = QuicFrameType.PADDING
_ACK = QuicFrameType.ACK
_SHORT = QuicPacketType.ONE_RTT
_SHORT_INT = int(QuicPacketType.ONE_RTT)
_ACKED = QuicDeliveryState.ACKED
_MIN_STREAM_SPACE = 20  # as qh3: below this no STREAM frame is started
_MIN_PAYLOAD = 2  # packet number (2 bytes sent) + payload >= 4 bytes for the HP sample
_FRAME_HANDLERS = "_QuicConnection__frame_handlers"  # qh3's name-mangled handler table


class StreamChunks:
    """In-order data for one stream, as several chunks (the packets of one receive batch):
    what the lean receive path queues instead of one ``StreamDataReceived`` per packet.
    ``data`` joins them for a consumer that wants one ``bytes``; ours takes ``chunks``."""

    __slots__ = ("chunks", "end_stream", "stream_id")

    def __init__(self, stream_id: int, chunk: bytes, end_stream: bool) -> None:
        self.stream_id = stream_id
        self.chunks = [chunk]
        self.end_stream = end_stream

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    def __repr__(self) -> str:
        size = sum(len(c) for c in self.chunks)
        return (f"StreamChunks(stream_id={self.stream_id}, chunks={len(self.chunks)}, "
                f"bytes={size}, end_stream={self.end_stream})")


MTU_PROBE_ATTEMPTS = 3
"""Probes of one size before giving up on it (RFC 8899's MAX_PROBES); qh3 stops at the first
loss, so one packet dropped by a full socket buffer kept a connection at 1280 bytes."""


class _ProbeSizes(list[int]):
    """qh3's list of path MTU probe sizes, with the losses of the current one."""

    losses = 0


class LeanConnection(QuicConnection):
    """qh3's connection with the lean paths described in the module docstring."""

    __slots__ = ()

    # sending ----------------------------------------------------------------------------

    def _write_application(self, builder: QuicPacketBuilder, network_path: Any,
                           now: float) -> None:
        if not self._lean_send_ok(builder, network_path, now):
            return super()._write_application(builder, network_path, now)
        self._lean_write(builder, now)

    def _lean_send_ok(self, builder: QuicPacketBuilder, network_path: Any, now: float) -> bool:
        """Nothing but STREAM frames (and an ACK with one range) is due, from streams that
        owe no RESET_STREAM or STOP_SENDING, on a validated path, at the start of a datagram."""
        if (
            self._quic_logger is not None
            or not self._handshake_complete
            or builder._packet is not None
            or builder._buffer.tell()
            or builder.max_total_bytes is not None
            or builder.max_flight_bytes is None
            or not network_path.is_validated
            or network_path.remote_challenges
            or self._handshake_done_pending
            or self._has_unsent_cids
            or self._retire_connection_ids
            or self._streams_blocked_pending
            or self._streams_dirty_limits
            or self._ping_pending
            or self._probe_pending
            or self._datagrams_pending
        ):
            return False
        crypto = self._cryptos[_ONE_RTT]
        if not crypto.send.is_valid() or crypto._update_key_requested:
            return False
        if not self._crypto_streams[_ONE_RTT].sender.buffer_is_empty:
            return False
        for limit in (self._local_max_data, self._local_max_streams_bidi,
                      self._local_max_streams_uni):
            if limit.used * 2 > limit.value or limit.value != limit.sent:
                return False
        space = self._spaces[_ONE_RTT]
        if space.ack_at is not None and space.ack_at <= now and len(space.ack_queue) != 1:
            return False
        for stream in self._streams_queue:
            if stream.receiver.stop_pending or stream.sender.reset_pending:
                return False
        return True

    def _lean_write(self, builder: QuicPacketBuilder, now: float) -> None:
        """qh3's ``_write_application`` loop for what ``_lean_send_ok`` allows: the same
        pacing, congestion window, flow control and stream order, one packet per datagram,
        straight into the builder's output; each packet is registered with loss recovery
        here, as ``datagrams_to_send`` and ``QuicPacketRecovery.on_packet_sent`` do."""
        crypto: Any = self._cryptos[_ONE_RTT]
        finalize = crypto.send._inner.finalize_packet
        space = self._spaces[_ONE_RTT]
        sent_packets = space.sent_packets
        loss = self._loss
        cc = loss._cc
        pacer: Any = loss._pacer  # our _Pacer (prepare_connection)
        queue: list[Any] = self._streams_queue
        buf = builder._buffer
        datagrams = builder._datagrams
        packet_numbers = builder._packet_numbers
        peer_cid = builder._peer_cid
        host_cid = builder._host_cid
        header_size = 3 + len(peer_cid)
        capacity = builder._buffer_capacity
        aead = crypto.aead_tag_size
        version: Any = self._version
        spin_bit = self._spin_bit
        max_flight = builder.max_flight_bytes
        assert max_flight is not None
        flight_bytes = builder._flight_bytes
        total_bytes = builder._total_bytes
        packet_number = packet_numbers[_ONE_RTT]
        allowed = pacer.allowance(now)
        paced = 0  # packets sent against ``allowed``
        eliciting_sent = False
        self._pacing_at = None
        try:
            while True:
                if paced >= allowed and (
                    (space.ack_at is None or space.ack_at >= now) and not self._probe_pending
                ):
                    pacer.spend(paced)
                    paced = 0
                    self._pacing_at = pacer.next_send_time(now)
                    if self._pacing_at is not None:
                        break
                    allowed = max(1, pacer.allowance(now))
                flight_capacity = max_flight - flight_bytes
                if flight_capacity > capacity:
                    flight_capacity = capacity
                buf.seek(header_size)
                handlers: list[Any] = []
                ack_eliciting = False
                if space.ack_at is not None and space.ack_at <= now:
                    received_at: float = space.largest_received_time  # type: ignore[assignment]
                    ack_delay = int((now - received_at) * 1000000
                                    ) >> self._local_ack_delay_exponent
                    buf.push_uint_var(_ACK)
                    push_ack_frame(buf, space.ack_queue, ack_delay)
                    handlers.append((self._on_ack_delivery,
                                     (space, space.largest_received_packet)))
                    space.ack_at = None
                sent: list[Any] = []
                write_idx = read_idx = 0
                queue_len = len(queue)
                remaining = self._remote_max_data - self._remote_max_data_used
                try:
                    while read_idx < queue_len:
                        stream = queue[read_idx]
                        read_idx += 1
                        sender = stream.sender
                        if sender.is_finished and stream.receiver.is_finished:
                            del self._streams[stream.stream_id]
                            self._streams_finished.add(stream.stream_id)
                            self._streams_dirty_limits.discard(stream)
                            continue
                        if not stream.is_blocked and not sender.buffer_is_empty:
                            flight_space = flight_capacity - buf.tell() - aead
                            if flight_space < _MIN_STREAM_SPACE:
                                queue[write_idx] = stream
                                write_idx += 1
                                break
                            max_offset = sender.highest_offset + remaining
                            if stream.max_stream_data_remote < max_offset:
                                max_offset = stream.max_stream_data_remote
                            result = sender.prepare_stream_frame(flight_space, max_offset)
                            if result is not None:
                                data, frame_type, offset, stop, previous_highest, _ = result
                                buf.push_uint_var(frame_type)
                                push_stream_frame_body(buf, stream.stream_id, offset, data)
                                handlers.append((sender.on_data_delivery, (offset, stop)))
                                ack_eliciting = True
                                used = sender.highest_offset - previous_highest
                                remaining -= used
                                self._remote_max_data_used += used
                                if used > 0:
                                    sent.append(stream)
                                    continue
                        queue[write_idx] = stream
                        write_idx += 1
                finally:
                    while read_idx < queue_len:
                        queue[write_idx] = queue[read_idx]
                        write_idx += 1
                        read_idx += 1
                    del queue[write_idx:]
                    queue.extend(sent)

                packet_size = buf.tell()
                if not handlers:
                    buf.seek(0)
                    break
                padding = _MIN_PAYLOAD + header_size - packet_size
                in_flight = ack_eliciting or padding > 0
                packet = QuicSentPacket(_ONE_RTT, in_flight, ack_eliciting, False,
                                        packet_number, _SHORT, now)
                packet.delivery_handlers = handlers
                packet.sent_bytes = size = finalize(
                    buf, 0, packet_size, padding if padding > 0 else 0, header_size, False,
                    version, _SHORT_INT, peer_cid, host_cid, b"", spin_bit, packet_number)
                datagrams.append(buf.data)
                buf.seek(0)
                total_bytes += size
                paced += 1

                # QuicPacketRecovery.on_packet_sent and QuicCongestionControl.on_packet_sent
                sent_packets[packet_number] = packet
                if ack_eliciting:
                    space.ack_eliciting_in_flight += 1
                    eliciting_sent = True
                if in_flight:
                    flight_bytes += size
                    if cc._last_ack > 0.0 and now - cc._last_ack >= K_CUBIC_MAX_IDLE_TIME:
                        cc._reset()
                    cc.bytes_in_flight += size
                    if packet_number > cc._hystart_largest_sent_pn:
                        cc._hystart_largest_sent_pn = packet_number
                    if (cc.hystart_enabled and cc.ssthresh is None
                            and cc._hystart_window_end is None):
                        cc._hystart_window_end = packet_number
                packet_number += 1
        finally:
            pacer.spend(paced)
            builder._flight_bytes = flight_bytes
            builder._total_bytes = total_bytes
            packet_numbers[_ONE_RTT] = packet_number
            if eliciting_sent:
                # (every lean packet that elicits an ACK is in flight)
                loss._time_of_last_sent_ack_eliciting_packet = now
                space.time_of_last_ack_eliciting_packet = now
                if not self._ack_eliciting_sent_since_receive:
                    # datagrams_to_send: RFC 9000 10.1, restart the idle timer
                    self._ack_eliciting_sent_since_receive = True
                    deadline = self._idle_deadline(now)
                    if deadline is not None and (
                        self._close_at is None or deadline > self._close_at
                    ):
                        self._close_at = deadline

    def _on_mtu_probe_delivery(self, delivery: QuicDeliveryState, probe_size: int) -> None:
        """qh3's, but a lost probe is sent again (MTU_PROBE_ATTEMPTS of one size in all)."""
        sizes = self._mtu_probe_sizes
        if delivery == _ACKED:
            super()._on_mtu_probe_delivery(delivery, probe_size)
            if isinstance(self._mtu_probe_sizes, _ProbeSizes):
                self._mtu_probe_sizes.losses = 0
            return
        losses = getattr(sizes, "losses", 0) + 1
        if losses >= MTU_PROBE_ATTEMPTS or not sizes or sizes[0] != probe_size:
            super()._on_mtu_probe_delivery(delivery, probe_size)  # stops probing
            return
        retry = _ProbeSizes(sizes)
        retry.losses = losses
        self._mtu_probe_sizes = retry
        self._mtu_probe_pending = None  # the next transmit probes this size again

    # receiving --------------------------------------------------------------------------

    def install_stream_frame_fix(self) -> None:
        """Route qh3's STREAM frame handling through :meth:`_stream_frame_once`."""
        handlers = getattr(self, _FRAME_HANDLERS)
        for frame_type in range(0x08, 0x10):
            handlers[frame_type] = (self._stream_frame_once, handlers[frame_type][1])

    def _stream_frame_once(self, context: Any, frame_type: int, buf: Buffer) -> None:
        """qh3's ``_handle_stream_frame``, minus the event it raises again for a stream whose
        receiving side was already over: qh3 1.9 reports a duplicate frame that arrives after
        the FIN (a retransmission) as one more ``end_stream``, and data arriving after a reset
        as new data (aioquic returns nothing once ``is_finished``, as here). Our connection has
        forgotten such a stream, so it took that event for a new stream from the peer."""
        start = buf.tell()
        stream_id = buf.pull_uint_var()
        buf.seek(start)
        stream = self._streams.get(stream_id)
        finished = stream is not None and stream.receiver.is_finished
        queued = len(self._events)
        QuicConnection._handle_stream_frame(self, context, frame_type, buf)
        if finished:
            while len(self._events) > queued:
                self._events.pop()

    def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
        self.receive_datagrams((data,), addr, now)

    def receive_datagrams(self, datagrams: Any, addr: Any, now: float) -> None:
        """``receive_datagram`` for each of ``datagrams`` (from ``addr``, arrived at
        ``now``), in order. The idle timer is restarted once, after the last: qh3 restarts it
        after every packet, at the same ``now``, to the same deadline (only an ACK in a later
        packet can move the PTO it includes, and the last restart sees that)."""
        received = False
        for data in datagrams:
            taken = self._lean_receive(data, addr, now)
            if taken is None:
                QuicConnection.receive_datagram(self, data, addr, now)
            elif taken:
                received = True
        if received and self._state not in END_STATES and not self._close_pending:
            self._close_at = self._idle_deadline(now)
            self._ack_eliciting_sent_since_receive = False

    def _lean_receive(self, data: bytes, addr: Any, now: float) -> bool | None:
        """One datagram the lean way: None when qh3 must take it, False when it was dropped
        or closed the connection, True when its packet was processed."""
        if (
            not data
            or data[0] & 0xC0 != 0x40  # long header (or the fixed bit is clear)
            or self._state is not _CONNECTED
            or not self._handshake_complete
            or self._quic_logger is not None
            or self._handshake_keys_discard_pending
            or self._close_at is None
        ):
            return None
        network_path = self._network_paths[0]
        host_cid = self.host_cid
        cid_end = 1 + len(host_cid)
        if (
            network_path.addr != addr
            or not network_path.is_validated
            or data[1:cid_end] != host_cid
            or len(data) < cid_end + 20
        ):
            return None

        # decrypt (as qh3: expire retained keys, keep the previous ones on a key update)
        crypto = self._cryptos[_ONE_RTT]
        space = self._spaces[_ONE_RTT]
        recv = crypto.recv
        try:
            if crypto._previous_recv is None and recv._inner is not None:
                plain_header, payload, packet_number, key_update = recv._inner.decrypt_packet(
                    data, cid_end, space.expected_packet_number)
                if key_update:
                    return None  # the key phase changed: qh3 takes it from the start
            else:
                key_phase = recv.key_phase
                if crypto._previous_recv is not None:
                    crypto.expire_previous_keys(now)
                plain_header, payload, packet_number = crypto.decrypt_packet(
                    data, cid_end, space.expected_packet_number)
                if crypto.recv.key_phase != key_phase:
                    crypto.retain_previous_keys(now + 3 * self._loss.get_probe_timeout())
        except (CryptoError, KeyUnavailableError):
            return None  # nothing changed yet: qh3 drops it (or sees a stateless reset)

        if plain_header[0] & 0x18:
            self.close(error_code=QuicErrorCode.PROTOCOL_VIOLATION, frame_type=_PADDING,
                       reason_phrase="Reserved bits must be zero")
            return False
        if packet_number > space.expected_packet_number:
            space.expected_packet_number = packet_number + 1
        if packet_number in space.ack_queue:
            return False  # RFC 9000 21.4: a duplicate
        if packet_number > self._spin_highest_pn:
            spin = bool(plain_header[0] & 0x20)
            self._spin_bit = not spin if self._is_client else spin
            self._spin_highest_pn = packet_number

        is_ack_eliciting = False
        try:
            is_ack_eliciting = self._lean_payload(payload, network_path, now)
        except QuicConnectionError as exc:
            self.close(error_code=exc.error_code, frame_type=exc.frame_type,
                       reason_phrase=exc.reason_phrase)
        if self._state in END_STATES or self._close_pending:
            return False

        if not space.discarded:
            if packet_number > space.largest_received_packet:
                space.largest_received_packet = packet_number
                space.largest_received_time = now
            space.ack_queue.add(packet_number)
            if is_ack_eliciting and space.ack_at is None:
                space.ack_at = now + self._ack_delay
        return True

    def _lean_payload(self, payload: bytes, network_path: Any, now: float) -> bool:
        """qh3's ``_payload_received`` for a 1-RTT packet, with STREAM frames handled here;
        returns whether the packet is ack-eliciting."""
        buf = Buffer(data=payload)
        context: QuicReceiveContext | None = None
        frame_found = False
        is_ack_eliciting = False
        handlers = getattr(self, _FRAME_HANDLERS)
        while not buf.eof():
            try:
                frame_type = buf.pull_uint_var()
            except BufferReadError:
                raise QuicConnectionError(
                    error_code=QuicErrorCode.FRAME_ENCODING_ERROR, frame_type=None,
                    reason_phrase="Malformed frame type") from None
            frame_found = True
            if 0x08 <= frame_type <= 0x0F:
                is_ack_eliciting = True
                try:
                    if self._lean_stream_frame(frame_type, buf):
                        continue
                except BufferReadError:
                    raise QuicConnectionError(
                        error_code=QuicErrorCode.FRAME_ENCODING_ERROR, frame_type=frame_type,
                        reason_phrase="Failed to parse frame") from None
                # not ours to take: qh3's handler reads the frame again (buf was rewound)
            try:
                handler, epochs = handlers[frame_type]
            except KeyError:
                raise QuicConnectionError(
                    error_code=QuicErrorCode.FRAME_ENCODING_ERROR, frame_type=frame_type,
                    reason_phrase="Unknown frame type") from None
            if _ONE_RTT not in epochs:
                raise QuicConnectionError(
                    error_code=QuicErrorCode.PROTOCOL_VIOLATION, frame_type=frame_type,
                    reason_phrase="Unexpected frame type")
            if context is None:
                context = QuicReceiveContext(
                    epoch=_ONE_RTT, host_cid=self.host_cid, network_path=network_path,
                    quic_logger_frames=None, time=now, version=None)
            try:
                handler(context, frame_type, buf)
            except BufferReadError:
                raise QuicConnectionError(
                    error_code=QuicErrorCode.FRAME_ENCODING_ERROR, frame_type=frame_type,
                    reason_phrase="Failed to parse frame") from None
            except StreamFinishedError:
                pass  # we lack the state for the stream, ignore the frame
            if frame_type not in NON_ACK_ELICITING_FRAME_TYPES:
                is_ack_eliciting = True
            # (qh3 also tells probing packets apart: that only matters on another path)
        if not frame_found:
            raise QuicConnectionError(
                error_code=QuicErrorCode.PROTOCOL_VIOLATION, frame_type=_PADDING,
                reason_phrase="Packet contains no frames")
        return is_ack_eliciting

    def _lean_stream_frame(self, frame_type: int, buf: Buffer) -> bool:
        """A STREAM frame for a stream we know, as qh3's ``_handle_stream_frame`` takes it;
        False (and ``buf`` rewound) for anything else."""
        start = buf.tell()
        try:
            stream_id, offset, data, fin = pull_stream_frame(buf, frame_type)
        except ValueError as exc:
            raise QuicConnectionError(
                error_code=QuicErrorCode.FRAME_ENCODING_ERROR, frame_type=frame_type,
                reason_phrase=str(exc)) from None
        stream = self._streams.get(stream_id)
        if stream is None or (stream_id & 2 and bool(stream_id & 1) != self._is_client):
            buf.seek(start)  # a new stream, a finished one, or one we cannot receive on
            return False
        end = offset + len(data)
        if end > stream.max_stream_data_local:
            raise QuicConnectionError(
                error_code=QuicErrorCode.FLOW_CONTROL_ERROR, frame_type=frame_type,
                reason_phrase="Over stream data limit")
        receiver = stream.receiver
        newly_received = end - receiver.highest_offset
        if newly_received < 0:
            newly_received = 0
        max_data = self._local_max_data
        if max_data.used + newly_received > max_data.value:
            raise QuicConnectionError(
                error_code=QuicErrorCode.FLOW_CONTROL_ERROR, frame_type=frame_type,
                reason_phrase="Over connection data limit")
        if (
            offset == receiver._buffer_start
            and data
            and receiver._final_size is None
            and not receiver._buffer
        ):
            # QuicStreamReceiver.handle_frame's in-order fast path
            if fin:
                receiver._final_size = end
                receiver.is_finished = True
            if end > receiver.highest_offset:
                receiver.highest_offset = end
            receiver._buffer_start = end
            queue: Any = self._events
            last = queue[-1] if queue else None
            if (
                last.__class__ is StreamChunks
                and last.stream_id == stream_id
                and not last.end_stream
            ):
                last.chunks.append(data)
                last.end_stream = fin
            else:
                queue.append(StreamChunks(stream_id, data, fin))
        else:
            finished = receiver.is_finished
            try:
                event = receiver.handle_frame(offset, data, fin)
            except FinalSizeError as exc:
                raise QuicConnectionError(
                    error_code=QuicErrorCode.FINAL_SIZE_ERROR, frame_type=frame_type,
                    reason_phrase=str(exc)) from None
            if event is not None and not finished:  # (see _stream_frame_once)
                self._events.append(event)
        max_data.used += newly_received
        if newly_received > 0:
            self._streams_dirty_limits.add(stream)
        return True


class LeanCubic(QuicCongestionControl):
    """qh3's CUBIC with :meth:`on_packets_acked`: the packets of one ACK in one call, with
    exactly the state ``on_packet_acked`` reaches packet by packet (same arithmetic, same
    order), but without a call and two ``_W_cubic`` per packet (within one ACK ``now`` is
    fixed, so both curve points only change when an epoch starts), the window in a local."""

    def on_packets_acked(self, packets: list[Any], now: float) -> None:
        if not packets:
            return
        mds = self._max_datagram_size
        cwnd = self.congestion_window
        ssthresh = self.ssthresh
        w_est = self._W_est
        in_css = self._hystart_in_css
        hystart = self.hystart_enabled
        window_end = self._hystart_window_end
        w_cubic_ahead = w_cubic_now = 0  # valid while ``epoch`` is the current t_epoch
        epoch: float | None = None
        acked = 0
        for packet in packets:
            sent_bytes = packet.sent_bytes
            acked += sent_bytes
            if (
                hystart
                and ssthresh is None
                and window_end is not None
                and packet.packet_number >= window_end
            ):  # a HyStart++ round ends (as on_packet_acked, on the attributes)
                self._hystart_last_round_min_rtt = self._hystart_current_round_min_rtt
                self._hystart_current_round_min_rtt = math.inf
                self._hystart_rtt_sample_count = 0
                window_end = self._hystart_window_end = self._hystart_largest_sent_pn + 1
                if in_css:
                    self._hystart_css_round += 1
                    if self._hystart_css_round >= K_HYSTART_CSS_ROUNDS:
                        ssthresh = self.ssthresh = cwnd
                        in_css = self._hystart_in_css = False
            if ssthresh is None or cwnd < ssthresh:
                cwnd += sent_bytes // K_HYSTART_CSS_GROWTH_DIVISOR if in_css else sent_bytes
                continue
            if self._starting_congestion_avoidance or self._first_slow_start:
                # an epoch starts (from the window as it is now)
                self.congestion_window = cwnd
                if self._first_slow_start and not self._starting_congestion_avoidance:
                    self._first_slow_start = False
                    self._W_max = cwnd
                    self._start_epoch(now)
                if self._starting_congestion_avoidance:
                    self._starting_congestion_avoidance = False
                    self._first_slow_start = False
                    self._start_epoch(now)
                w_est = self._W_est
            w_est = int(w_est + mds * (sent_bytes / cwnd))
            if epoch != self._t_epoch:
                epoch = self._t_epoch
                t = now - epoch
                w_cubic_ahead = self._W_cubic(t + self._rtt)
                w_cubic_now = self._W_cubic(t)
            if w_cubic_ahead < cwnd:
                target = cwnd
            elif w_cubic_ahead > int(1.5 * cwnd):
                target = int(1.5 * cwnd)
            else:
                target = w_cubic_ahead
            if w_cubic_now < w_est:
                cwnd = w_est
            else:
                cwnd = int(cwnd + (target - cwnd) * (mds / cwnd))
        self.bytes_in_flight -= acked
        self._last_ack = now
        self.congestion_window = cwnd
        self._W_est = w_est


class LeanRecovery(QuicPacketRecovery):
    """qh3's loss recovery with a leaner ``on_ack_received`` (same results):

    - ``sent_packets`` is walked in its own order, which is packet-number order (packets are
      only ever added as they are sent), instead of sorting its keys at every ACK;
    - congestion control gets the ACK's packets in one :meth:`LeanCubic.on_packets_acked`
      (delivery callbacks do not touch it, except an MTU probe's, which changes the datagram
      size: the packets before a probe are counted first, as they were before);
    - qh3's check for a missing Initial CRYPTO packet scans every packet still in flight,
      at every ACK, in every space: it only runs where Initial packets are.
    """

    def on_ack_received(self, space: Any, ack_rangeset: Any, ack_delay: float, now: float,
                        reset_pto_count: bool = True) -> None:
        cc = self._cc
        if self._quic_logger is not None or cc.__class__ is not LeanCubic:
            return super().on_ack_received(space, ack_rangeset, ack_delay, now,
                                           reset_pto_count)
        largest_acked = ack_rangeset.bounds()[1] - 1
        largest_newly_acked = None
        largest_newly_acked_ack_eliciting = None
        largest_ack_eliciting_sent_time = None
        if largest_acked > space.largest_acked_packet:
            space.largest_acked_packet = largest_acked
        sent_packets = space.sent_packets
        first = next(iter(sent_packets.values()), None)
        initial_space = first is not None and first.packet_type == QuicPacketType.INITIAL
        in_flight: list[Any] = []
        for packet_number in list(sent_packets):
            if packet_number > largest_acked:
                break
            if packet_number not in ack_rangeset:
                continue
            packet = sent_packets.pop(packet_number)
            if packet.is_ack_eliciting:
                largest_newly_acked_ack_eliciting = packet_number
                largest_ack_eliciting_sent_time = packet.sent_time
                if not packet.is_pmtu_probe:
                    space.ack_eliciting_in_flight -= 1
            largest_newly_acked = packet_number
            if packet.is_pmtu_probe:  # its callback changes the datagram size cc works with
                if in_flight:
                    cc.on_packets_acked(in_flight, now)
                    in_flight = []
                if packet.in_flight:
                    cc.on_packet_acked(packet, now=now)
            elif packet.in_flight:
                in_flight.append(packet)
            handlers = packet.delivery_handlers
            if handlers is not None:
                for handler, args in handlers:
                    handler(_ACKED, *args)
        if in_flight:
            cc.on_packets_acked(in_flight, now)

        if largest_newly_acked is None:
            return

        if largest_acked == largest_newly_acked_ack_eliciting:
            assert largest_ack_eliciting_sent_time is not None
            latest_rtt = now - largest_ack_eliciting_sent_time
            ack_delay = min(ack_delay, self.max_ack_delay)
            self._rtt_latest = max(latest_rtt, 0.001)
            self._rtt_latest_raw = self._rtt_latest
            if self._rtt_latest < self._rtt_min:
                self._rtt_min = self._rtt_latest
            if self._rtt_latest >= self._rtt_min + ack_delay:
                self._rtt_latest -= ack_delay
            if not self._rtt_initialized:
                self._rtt_initialized = True
                self._rtt_variance = latest_rtt / 2
                self._rtt_smoothed = latest_rtt
            else:
                self._rtt_variance = 3 / 4 * self._rtt_variance + 1 / 4 * abs(
                    self._rtt_smoothed - self._rtt_latest
                )
                self._rtt_smoothed = 7 / 8 * self._rtt_smoothed + 1 / 8 * self._rtt_latest
            cc.on_rtt_measurement(latest_rtt, now=now)
            self._pacer.update_rate(
                congestion_window=cc.congestion_window, smoothed_rtt=self._rtt_smoothed)

        self._detect_loss(space, now=now)

        if initial_space and any(
            packet.packet_type == QuicPacketType.INITIAL
            and packet.is_crypto_packet
            and packet.packet_number < largest_newly_acked
            for packet in space.sent_packets.values()
        ):
            self._queue_oldest_crypto_packet(space)
            self.start_packet_pacing(now)

        if reset_pto_count:
            self._pto_count = 0
