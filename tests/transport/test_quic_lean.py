"""The qh3 adapter's lean per-packet paths (``_qh3_lean``) against qh3's own code.

Congestion control and ACK processing are compared state for state with qh3's classes on
random sequences; the send and receive paths run a bulk transfer between two in-memory
connections with packets lost, duplicated and reordered, checking every byte and that the
lean paths did the work (and that qh3's own connection classes, on the same link, agree).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from nbtunnel.transport.quic import available_backends

pytestmark = pytest.mark.skipif("qh3" not in available_backends(), reason="qh3 not installed")

if "qh3" in available_backends():
    from qh3._hazmat import Buffer, RangeSet
    from qh3.quic.connection import QuicConnection
    from qh3.quic.packet import QuicPacketType, pull_quic_header
    from qh3.quic.packet_builder import QuicDeliveryState, QuicSentPacket
    from qh3.quic.recovery import QuicCongestionControl, QuicPacketRecovery, QuicPacketSpace
    from qh3.tls import Epoch

    from nbtunnel.transport.quic import get_backend
    from nbtunnel.transport.quic._qh3 import _Pacer
    from nbtunnel.transport.quic._qh3_lean import (
        LeanConnection,
        LeanCubic,
        LeanRecovery,
        StreamChunks,
    )
    from nbtunnel.transport.quic.backend import QuicSettings
    from nbtunnel.transport.tls import LocalCA

CC_FIELDS = (
    "bytes_in_flight", "congestion_window", "ssthresh", "_first_slow_start",
    "_starting_congestion_avoidance", "_K", "_W_max", "_W_est", "_cwnd_epoch", "_t_epoch",
    "_last_ack", "_congestion_recovery_start_time", "_rtt", "_hystart_in_css",
    "_hystart_css_round", "_hystart_css_baseline_min_rtt", "_hystart_last_round_min_rtt",
    "_hystart_current_round_min_rtt", "_hystart_rtt_sample_count", "_hystart_window_end",
    "_hystart_largest_sent_pn", "_max_datagram_size",
)


def _cc_state(cc: Any) -> dict[str, Any]:
    return {name: getattr(cc, name) for name in CC_FIELDS}


def _packet(pn: int, size: int, now: float, **kw: Any) -> QuicSentPacket:
    packet = QuicSentPacket(Epoch.ONE_RTT, kw.pop("in_flight", True),
                            kw.pop("ack_eliciting", True), False, pn, QuicPacketType.ONE_RTT,
                            sent_time=now, sent_bytes=size)
    for name, value in kw.items():
        setattr(packet, name, value)
    return packet


@pytest.mark.parametrize("seed", range(40))
def test_batched_cubic_reaches_the_state_of_packet_by_packet_acks(seed: int) -> None:
    rng = random.Random(seed)
    mds = rng.choice([1200, 1280, 1452, 16384])
    plain, lean = QuicCongestionControl(mds), QuicCongestionControl(mds)
    lean.__class__ = LeanCubic
    if rng.random() < 0.3:
        plain.hystart_enabled = lean.hystart_enabled = False
    now, pn = 1.0, 0
    outstanding: list[QuicSentPacket] = []
    for _ in range(300):
        now += rng.choice([0.0, 0.0001, 0.001, 0.02, rng.random() * 0.5])
        action = rng.random()
        if action < 0.45 or not outstanding:
            for _ in range(rng.randint(1, 80)):
                packet = _packet(pn, rng.choice([mds, mds, mds, rng.randint(30, mds)]), now)
                pn += 1
                plain.on_packet_sent(packet)
                lean.on_packet_sent(packet)
                outstanding.append(packet)
        elif action < 0.85:
            count = rng.randint(1, len(outstanding))
            acked, outstanding = outstanding[:count], outstanding[count:]
            for packet in acked:
                plain.on_packet_acked(packet, now)
            lean.on_packets_acked(acked, now)
        elif action < 0.93:
            count = rng.randint(1, min(5, len(outstanding)))
            lost, outstanding = outstanding[:count], outstanding[count:]
            plain.on_packets_lost(lost, now)
            lean.on_packets_lost(lost, now)
        elif action < 0.97:
            rtt = rng.choice([0.0002, 0.001, 0.004, 0.03, 0.3])
            for cc in (plain, lean):
                cc.on_rtt_measurement(rtt, now)
        else:
            for cc in (plain, lean):
                cc.on_persistent_congestion(now)
        if rng.random() < 0.02:  # a PMTU probe got through: bigger packets from now on
            mds = plain._max_datagram_size = lean._max_datagram_size = rng.choice([1452, 4096])
        assert _cc_state(lean) == _cc_state(plain)


class _Calls:
    """Delivery callbacks that record their order (and, for an MTU probe, change the
    datagram size congestion control works with, as qh3's does)."""

    def __init__(self, recovery: Any) -> None:
        self.recovery = recovery
        self.log: list[tuple[Any, ...]] = []

    def data(self, delivery: Any, start: int, stop: int) -> None:
        self.log.append(("data", delivery, start, stop, self.recovery._cc.congestion_window))

    def probe(self, delivery: Any, size: int) -> None:
        self.log.append(("probe", delivery, size, self.recovery._cc.congestion_window))
        if delivery == QuicDeliveryState.ACKED:
            self.recovery._cc._max_datagram_size = size


def _recovery(lean: bool) -> Any:
    recovery = QuicPacketRecovery(initial_rtt=0.1, peer_completed_address_validation=True,
                                  send_probe=lambda: None, max_datagram_size=1200)
    recovery.spaces = [QuicPacketSpace(), QuicPacketSpace(), QuicPacketSpace()]
    recovery._pacer = _Pacer(type("Q", (), {"_max_datagram_size": 1200})())
    if lean:
        recovery.__class__ = LeanRecovery
        recovery._cc.__class__ = LeanCubic
    return recovery


RECOVERY_FIELDS = ("_rtt_initialized", "_rtt_latest", "_rtt_latest_raw", "_rtt_min",
                   "_rtt_smoothed", "_rtt_variance", "_pto_count", "_loss_total")


@pytest.mark.parametrize("seed", range(25))
def test_lean_ack_processing_matches_qh3(seed: int) -> None:
    rng = random.Random(seed)
    sides = [(_recovery(False), None), (_recovery(True), None)]
    calls = [_Calls(r) for r, _ in sides]
    space_of = [r.spaces[2] for r, _ in sides]
    now, pn = 1.0, 0
    sent_pns: list[int] = []
    for _ in range(200):
        now += rng.choice([0.0001, 0.0005, 0.002, 0.05])
        if rng.random() < 0.55 or not sent_pns:
            for _ in range(rng.randint(1, 60)):
                probe = rng.random() < 0.02
                size = rng.choice([1200, 1452]) if not probe else 1452
                eliciting = probe or rng.random() < 0.97
                for (recovery, _), call, space in zip(sides, calls, space_of, strict=True):
                    packet = _packet(pn, size, now, is_pmtu_probe=probe,
                                     ack_eliciting=eliciting)
                    handler = (call.probe, (size,)) if probe else (call.data, (pn, pn + 1))
                    packet.delivery_handlers = [handler]
                    recovery.on_packet_sent(packet, space)
                sent_pns.append(pn)
                pn += 1
        else:
            # an ACK of a random window of what was sent, with holes (and old ranges again)
            acks = RangeSet()
            low = rng.randint(max(0, pn - 400), pn - 1)
            high = rng.randint(low, pn - 1)
            cursor = low
            while cursor <= high:
                stop = min(high + 1, cursor + rng.randint(1, 40))
                acks.add(cursor, stop)
                cursor = stop + rng.choice([0, 0, 1, 3])
            if rng.random() < 0.3 and low > 5:
                acks.add(0, rng.randint(1, low))
            delay = rng.choice([0.0, 0.0005, 0.03])
            for (recovery, _), space in zip(sides, space_of, strict=True):
                recovery.on_ack_received(space, acks, delay, now)
        plain, lean = sides[0][0], sides[1][0]
        assert _cc_state(lean._cc) == _cc_state(plain._cc)
        assert {f: getattr(lean, f) for f in RECOVERY_FIELDS} == {
            f: getattr(plain, f) for f in RECOVERY_FIELDS}
        assert list(space_of[1].sent_packets) == list(space_of[0].sent_packets)
        for field in ("ack_eliciting_in_flight", "largest_acked_packet", "loss_time"):
            assert getattr(space_of[1], field) == getattr(space_of[0], field)
        assert lean._pacer.packet_time == plain._pacer.packet_time
        # the same callbacks, in the same order; congestion control may run ahead of a data
        # packet's callback (they do not read it), never of a probe's
        assert [c[:-1] for c in calls[1].log] == [c[:-1] for c in calls[0].log]
        assert [c for c in calls[1].log if c[0] == "probe"] == [
            c for c in calls[0].log if c[0] == "probe"]


# --- two in-memory connections over a lossy link --------------------------------------------

CLIENT = ("127.0.0.1", 40000)
SERVER = ("127.0.0.1", 4433)
MB = 1 << 20


class _Link:
    """Datagrams in flight under a virtual clock: one-way delay, loss, duplicates, reordering."""

    def __init__(self, rng: random.Random, loss: float, dup: float, reorder: float) -> None:
        self.rng = rng
        self.loss, self.dup, self.reorder = loss, dup, reorder
        self.queue: list[tuple[float, int, bytes, Any]] = []
        self.seq = 0

    def put(self, now: float, datagrams: list[bytes], to: Any) -> None:
        for data in datagrams:
            if self.rng.random() < self.loss:
                continue
            copies = 2 if self.rng.random() < self.dup else 1
            for _ in range(copies):
                delay = 0.0002 + (self.rng.random() * 0.002 if self.rng.random() < self.reorder
                                  else 0.0)
                self.seq += 1
                self.queue.append((now + delay, self.seq, data, to))

    def due(self, now: float) -> list[tuple[bytes, Any]]:
        self.queue.sort()
        ready = [(d, to) for at, _, d, to in self.queue if at <= now]
        self.queue = [item for item in self.queue if item[0] > now]
        return ready


def _pair(tmp_path: Path, lean: bool, loopback: int = 0,
          keep: Any = lambda sender, data: True) -> tuple[Any, Any]:
    """A client and a server connection after their handshake (``keep(sender, datagram)``
    False: that datagram is lost)."""
    backend = get_backend("qh3")
    ca = LocalCA.load_or_create(tmp_path / "ca")
    settings = QuicSettings(backend="qh3", loopback_datagram_size=loopback)
    client_config = backend.client_configuration(settings, "localhost", str(ca.ca_path), True)
    client = (backend.new_client(client_config, settings) if lean
              else QuicConnection(configuration=client_config))
    backend.prepare_connection(client, settings, lambda _sid: None)
    backend.peer_address(client, settings, SERVER)
    client.connect(SERVER, now=0.0)
    first = [d for d, _ in client.datagrams_to_send(0.0)]
    header = pull_quic_header(Buffer(data=first[0]), host_cid_length=8)
    server = QuicConnection(
        configuration=backend.server_configuration(settings, str(ca.cert_path),
                                                   str(ca.key_path)),
        original_destination_connection_id=header.destination_cid)
    backend.prepare_connection(server, settings, lambda _sid: None)
    backend.peer_address(server, settings, CLIENT)
    if not lean:  # qh3's own classes (with our pacer)
        for quic in (client, server):
            quic.__class__ = QuicConnection
            quic._loss.__class__ = QuicPacketRecovery
            quic._loss._cc.__class__ = QuicCongestionControl
    else:
        assert isinstance(server, LeanConnection) and isinstance(client, LeanConnection)
    now = 0.0
    to_server = first
    for _ in range(100):
        now += 0.001
        for data in to_server:
            if keep(client, data):
                server.receive_datagram(data, CLIENT, now)
        to_client = [d for d, _ in server.datagrams_to_send(now)]
        for data in to_client:
            if keep(server, data):
                client.receive_datagram(data, SERVER, now)
        to_server = [d for d, _ in client.datagrams_to_send(now)]
        if client._handshake_complete and server._handshake_complete and not to_server \
                and not to_client:
            break
    assert client._handshake_complete and server._handshake_complete
    return client, server


def _transfer(tmp_path: Path, *, lean: bool, upload: bool, size: int, seed: int,
              loss: float = 0.0, dup: float = 0.0, reorder: float = 0.0) -> dict[str, Any]:
    """``size`` bytes one way on a client-opened stream, the other way a short answer."""
    client, server = _pair(tmp_path, lean)
    rng = random.Random(seed)
    link = _Link(rng, loss, dup, reorder)
    sender, receiver = (client, server) if upload else (server, client)
    stream_id = client.get_next_available_stream_id()
    client.send_stream_data(stream_id, b"GET /blob")
    payload = random.Random(seed).randbytes(size)
    got = {id(client): bytearray(), id(server): bytearray()}
    fin = {id(client): False, id(server): False}
    chunk_events = 0
    written = 0
    now = 0.2
    peers = {id(client): SERVER, id(server): CLIENT}
    for _ in range(400_000):
        if written < size and (upload or got[id(server)]):
            sender_stream = sender._streams.get(stream_id)
            pending = 0 if sender_stream is None else sum(
                b - a for a, b in sender_stream.sender._pending)
            if pending < 512 << 10:
                n = min(64 << 10, size - written)
                sender.send_stream_data(stream_id, payload[written:written + n],
                                        end_stream=written + n == size)
                written += n
        for quic in (client, server):
            timer = quic.get_timer()
            if timer is not None and timer <= now:
                quic.handle_timer(now)
            link.put(now, [d for d, _ in quic.datagrams_to_send(now)], quic)
        now += 0.0001
        arrivals = link.due(now)
        by_peer: dict[int, list[bytes]] = {}
        for data, to in arrivals:
            target = server if to is client else client
            by_peer.setdefault(id(target), []).append(data)
        for quic in (client, server):
            batch = by_peer.get(id(quic))
            if not batch:
                continue
            if lean:
                quic.receive_datagrams(batch, peers[id(quic)], now)
            else:
                for data in batch:
                    quic.receive_datagram(data, peers[id(quic)], now)
            while (event := quic.next_event()) is not None:
                if isinstance(event, StreamChunks):
                    chunk_events += 1
                data = getattr(event, "data", None)
                if getattr(event, "stream_id", None) == stream_id and data is not None:
                    got[id(quic)] += data
                    if event.end_stream:
                        fin[id(quic)] = True
        if fin[id(receiver)]:
            break
    else:
        raise AssertionError(f"stuck: {len(got[id(receiver)])} of {size} bytes")
    assert bytes(got[id(receiver)]) == (b"GET /blob" + payload if upload else payload)
    return {"chunk_events": chunk_events, "lost": sender._loss._loss_total,
            "packets": sender._spaces[Epoch.ONE_RTT].packet_number,
            "open": client._state, "virtual_s": now}


@pytest.mark.parametrize("upload", [False, True], ids=["download", "upload"])
@pytest.mark.parametrize(("loss", "dup", "reorder"), [
    (0.0, 0.0, 0.0), (0.03, 0.0, 0.0), (0.01, 0.02, 0.1), (0.1, 0.05, 0.3)])
def test_bulk_over_a_bad_link_arrives_intact(
    tmp_path: Path, upload: bool, loss: float, dup: float, reorder: float
) -> None:
    size = 3 * MB
    lean = _transfer(tmp_path, lean=True, upload=upload, size=size, seed=7, loss=loss,
                     dup=dup, reorder=reorder)
    assert lean["chunk_events"] > 0  # the lean receive path carried data
    if loss:
        assert lean["lost"] > 0  # and loss recovery had work to do
    plain = _transfer(tmp_path, lean=False, upload=upload, size=size, seed=7, loss=loss,
                      dup=dup, reorder=reorder)
    assert plain["chunk_events"] == 0
    # same packets on the wire, give or take what timing and loss change
    assert lean["packets"] == pytest.approx(plain["packets"], rel=0.15)


def test_unusual_packets_take_qh3s_path(tmp_path: Path) -> None:
    """What the lean receive path does not take is qh3's, with qh3's outcome."""
    client, server = _pair(tmp_path, lean=True)
    seen: list[str] = []
    real = QuicConnection.receive_datagram

    def spy(self: Any, data: bytes, addr: Any, now: float) -> None:
        seen.append("qh3")
        real(self, data, addr, now)

    QuicConnection.receive_datagram = spy  # type: ignore[method-assign]
    try:
        sid = client.get_next_available_stream_id()
        client.send_stream_data(sid, b"x" * 5000)
        datagrams = [d for d, _ in client.datagrams_to_send(1.0)]
        server.receive_datagrams(datagrams, CLIENT, 1.0)  # a new stream: qh3's frame handler
        assert seen == [] and server._streams.get(sid) is not None
        client.send_stream_data(sid, b"y" * 3000)
        more = [d for d, _ in client.datagrams_to_send(1.1)]
        server.receive_datagrams(more, CLIENT, 1.1)
        assert seen == []  # a known stream: lean
        server.receive_datagrams(more, CLIENT, 1.2)  # duplicates: dropped, lean
        assert seen == []
        server.receive_datagrams([more[0]], ("127.0.0.1", 40001), 1.3)  # another path
        assert seen == ["qh3"]
        seen.clear()
        bad = bytearray(more[0])
        bad[-1] ^= 1
        server.receive_datagrams([bytes(bad)], CLIENT, 1.4)  # fails to decrypt: qh3 drops it
        assert seen == ["qh3"]
    finally:
        QuicConnection.receive_datagram = real  # type: ignore[method-assign]
    events = []
    while (event := server.next_event()) is not None:
        events.append(event)
    data = b"".join(e.data for e in events if getattr(e, "stream_id", None) == sid)
    assert data == b"x" * 5000 + b"y" * 3000


@pytest.mark.parametrize("path", ["lean", "qh3"])
def test_a_frame_after_the_fin_raises_no_second_end_of_stream(tmp_path: Path, path: str) -> None:
    """A retransmission of a stream's last frame, arriving after the FIN was delivered, must
    not look like a new stream (qh3 1.9 reported it as one more ``end_stream``; our connection
    had forgotten the stream and accepted a ghost one). Same after a reset."""
    client, server = _pair(tmp_path, lean=True)
    receive = (server.receive_datagrams if path == "lean" else
               lambda datagrams, addr, now: [QuicConnection.receive_datagram(server, d, addr, now)
                                             for d in datagrams])

    def events() -> list[tuple[int, bytes, bool]]:
        out = []
        while (event := server.next_event()) is not None:
            if getattr(event, "stream_id", None) is not None and hasattr(event, "end_stream"):
                out.append((event.stream_id, event.data, event.end_stream))
        return out

    sid = client.get_next_available_stream_id()
    client.send_stream_data(sid, b"request", end_stream=True)
    receive([d for d, _ in client.datagrams_to_send(1.0)], CLIENT, 1.0)
    assert b"".join(d for _, d, _ in events()) == b"request"
    # the client's copy of that frame is declared lost and goes out again, FIN included
    client._streams[sid].sender.on_data_delivery(QuicDeliveryState.LOST, 0, len(b"request"))
    again = [d for d, _ in client.datagrams_to_send(1.1)]
    assert again
    receive(again, CLIENT, 1.1)
    assert events() == []
    # data after a reset: nothing either
    sid2 = client.get_next_available_stream_id()
    client.send_stream_data(sid2, b"x" * 100)
    first = [d for d, _ in client.datagrams_to_send(1.2)]
    client.reset_stream(sid2, 7)
    reset = [d for d, _ in client.datagrams_to_send(1.3)]
    receive(reset, CLIENT, 1.3)  # the reset overtakes the data
    assert [e for e in events() if e[0] == sid2] == []
    receive(first, CLIENT, 1.4)
    assert [e for e in events() if e[0] == sid2] == []


@pytest.mark.parametrize(("drops", "expected"), [
    ({}, (16384, 16384)),
    ({1350: 1, 1452: 2, 4096: 1, 16384: 2}, (16384, 16384)),  # lost, sent again
    ({4096: 3}, (1452, 1452)),  # three times lost: that size is not for this path
    ({1350: 3}, (1280, 1280)),
])
def test_a_lost_mtu_probe_is_sent_again(
    tmp_path: Path, drops: dict[int, int], expected: tuple[int, int]
) -> None:
    """qh3 stopped probing at the first lost probe (one datagram dropped by a busy socket
    buffer kept a connection at 1280 bytes for its life); a size now gets three probes."""
    dropped: dict[tuple[int, int], int] = {}

    def keep(sender: Any, data: bytes) -> bool:
        key = (id(sender), len(data))
        if len(data) > sender._max_datagram_size and dropped.get(key, 0) < drops.get(
                len(data), 0):
            dropped[key] = dropped.get(key, 0) + 1  # a probe, lost
            return False
        return True

    client, server = _pair(tmp_path, lean=True, loopback=16384, keep=keep)
    now = 1.0
    for _ in range(400):
        if (client._max_datagram_size, server._max_datagram_size) == expected \
                and not client._mtu_probe_sizes and not server._mtu_probe_sizes:
            break
        client.send_ping(1)
        server.send_ping(2)
        for sender, receiver, to in ((client, server, CLIENT), (server, client, SERVER)):
            timer = sender.get_timer()
            if timer is not None and timer <= now:
                sender.handle_timer(now)
            for data, _ in sender.datagrams_to_send(now):
                if keep(sender, data):
                    receiver.receive_datagram(data, to, now)
        now += 0.01
    assert (client._max_datagram_size, server._max_datagram_size) == expected
    assert sum(dropped.values()) == 2 * sum(drops.values())
