"""The sans-I/O HTTP/2 connection (core/h2) against the h2 library as the peer, in memory, and
against hand-made hostile frames."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nbtunnel.core.h2 import frames as f
from nbtunnel.core.h2.connection import (
    DATA_RECEIVED,
    GOAWAY_RECEIVED,
    HEADERS_RECEIVED,
    STREAM_ENDED,
    STREAM_RESET,
    WINDOW_OPENED,
    Event,
    H2Core,
    H2ProtocolError,
    StreamStateError,
)
from nbtunnel.core.h2.frames import ErrorCode, Setting
from nbtunnel.core.h2.hpack import Decoder, Encoder

SERVER_SETTINGS = {Setting.INITIAL_WINDOW_SIZE: 1 << 20, Setting.MAX_FRAME_SIZE: 1 << 16,
                   Setting.MAX_CONCURRENT_STREAMS: 2**31 - 1}
CLIENT_SETTINGS = {Setting.ENABLE_PUSH: 0, Setting.INITIAL_WINDOW_SIZE: 1 << 20,
                   Setting.MAX_FRAME_SIZE: 1 << 16}
FAST = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=int(os.environ.get("NBTUNNEL_FUZZ_EXAMPLES", "5000")),
                deadline=None, suppress_health_check=list(HealthCheck))


def fuzz_target(*strategies: Any) -> Callable[[Callable[..., None]], tuple[Any, Any]]:
    """(fast derandomized test, long randomized test marked `fuzz`) for one property."""
    def pair(prop: Callable[..., None]) -> tuple[Any, Any]:
        return (FAST(given(*strategies)(prop)),
                pytest.mark.fuzz(LONG(given(*strategies)(prop))))
    return pair


GET = [(":method", "GET"), (":scheme", "http"), (":authority", "a.example"), (":path", "/x")]


class Pair:
    """Our core and an h2 connection of the other role, bytes moved by hand."""

    def __init__(self, *, client: bool, **core: Any) -> None:
        settings = CLIENT_SETTINGS if client else SERVER_SETTINGS
        self.core = H2Core(client=client, settings=settings, connection_window=16 << 20, **core)
        self.peer = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=not client, header_encoding="utf-8"))
        self.events: list[Event] = []
        self.peer_events: list[Any] = []
        self.core.initiate()
        self.peer.initiate_connection()
        self.pump()

    def pump(self) -> None:
        for _ in range(50):
            ours, theirs = self.core.data_to_send(), self.peer.data_to_send()
            if not ours and not theirs:
                return
            if theirs:
                self.events += self.core.receive(theirs)
            if ours:
                self.peer_events += self.peer.receive_data(ours)
        raise AssertionError("the connection never went quiet")

    def of(self, kind: int) -> list[Event]:
        return [e for e in self.events if e[0] == kind]

    def peer_of(self, kind: type) -> list[Any]:
        return [e for e in self.peer_events if isinstance(e, kind)]


def goaway_code(out: bytes) -> int:
    """The error code of the GOAWAY in ``out``."""
    pos = 0
    while pos + 9 <= len(out):
        lt, _, _ = f.HEADER.unpack_from(out, pos)
        if lt & 0xFF == f.GOAWAY:
            return int(struct.unpack_from(">I", out, pos + 13)[0])
        pos += 9 + (lt >> 8)
    raise AssertionError(f"no GOAWAY in {out!r}")


def test_server_role_request_and_response_with_h2_as_client() -> None:
    p = Pair(client=False)
    sid = p.peer.get_next_available_stream_id()
    p.peer.send_headers(sid, [*GET, ("x-test", "1")], end_stream=True)
    p.pump()
    assert p.of(HEADERS_RECEIVED) == [(HEADERS_RECEIVED, sid, [*GET, ("x-test", "1")], True)]
    p.core.send_headers(sid, [(":status", "200"), ("content-type", "text/plain")],
                        end_stream=False)
    p.core.send_data(sid, b"hello")
    p.core.end_stream(sid)
    p.pump()
    (resp,) = p.peer_of(h2.events.ResponseReceived)
    assert resp.headers == [(":status", "200"), ("content-type", "text/plain")]
    assert b"".join(e.data for e in p.peer_of(h2.events.DataReceived)) == b"hello"
    assert p.peer_of(h2.events.StreamEnded)
    assert sid not in p.core.streams  # over both ways: forgotten


def test_client_role_request_response_informational_and_trailers() -> None:
    p = Pair(client=True)
    sid = p.core.open_stream(GET, end_stream=False)
    p.core.send_data(sid, b"body")
    p.core.end_stream(sid)
    p.pump()
    (req,) = p.peer_of(h2.events.RequestReceived)
    assert req.headers == GET
    assert b"".join(e.data for e in p.peer_of(h2.events.DataReceived)) == b"body"
    p.peer.send_headers(sid, [(":status", "100")])
    p.peer.send_headers(sid, [(":status", "200"), ("x-a", "b")])
    p.peer.send_data(sid, b"answer", pad_length=20)
    p.peer.send_headers(sid, [("x-trailer", "t")], end_stream=True)
    p.pump()
    assert p.of(HEADERS_RECEIVED) == [(HEADERS_RECEIVED, sid, [(":status", "200"),
                                                                ("x-a", "b")], False)]
    assert p.of(DATA_RECEIVED) == [(DATA_RECEIVED, sid, b"answer")]
    assert p.of(STREAM_ENDED) == [(STREAM_ENDED, sid)]


def test_padding_is_credited_back_and_data_when_consumed() -> None:
    p = Pair(client=False)
    sid = p.peer.get_next_available_stream_id()
    p.peer.send_headers(sid, GET)
    window = p.peer.local_flow_control_window(sid)
    p.peer.send_data(sid, b"x" * 1000, pad_length=100)
    p.pump()
    assert p.of(DATA_RECEIVED) == [(DATA_RECEIVED, sid, b"x" * 1000)]
    stream = p.core.streams[sid]
    assert stream.unacked == 101  # the padding (and its length byte) is consumed already
    p.core.ack_data(sid, 1000)
    for _ in range(600):  # more than half the stream window, consumed: a WINDOW_UPDATE
        p.peer.send_data(sid, b"y" * 1000)
        p.pump()
        p.core.ack_data(sid, 1000)
    p.pump()
    # every consumed byte is either credited back or in the batch not yet sent
    assert p.peer.local_flow_control_window(sid) + stream.unacked == window
    assert stream.unacked < 600_000


def test_priority_unknown_frames_and_unknown_settings_are_ignored() -> None:
    p = Pair(client=False)
    sid = p.peer.get_next_available_stream_id()
    p.peer.send_headers(sid, GET, priority_weight=200, priority_depends_on=0,
                        priority_exclusive=True)
    p.peer.prioritize(sid, weight=10)
    p.pump()
    extension = f.frame(0xFA, 0xFF, 0, b"whatever") + f.frame(0xFB, 0, sid, b"")
    settings = f.frame(f.SETTINGS, 0, 0, struct.pack(">HI", 0x4242, 7))
    p.events += p.core.receive(extension + settings)
    p.pump()
    assert [e[:2] for e in p.of(HEADERS_RECEIVED)] == [(HEADERS_RECEIVED, sid)]
    assert len(p.peer_of(h2.events.SettingsAcknowledged)) >= 1
    assert not p.core.closed


def test_settings_change_mid_connection_moves_windows_and_frame_size() -> None:
    p = Pair(client=True)
    sid = p.core.open_stream(GET, end_stream=False)
    p.pump()
    assert p.core.window(sid) == 65535
    p.peer.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100,
                            h2.settings.SettingCodes.MAX_FRAME_SIZE: 1 << 20,
                            h2.settings.SettingCodes.HEADER_TABLE_SIZE: 256})
    p.pump()
    assert p.core.window(sid) == 100
    assert p.core.max_outbound_frame_size == 1 << 20
    assert p.of(WINDOW_OPENED)
    p.core.send_data(sid, b"z" * 100)
    with pytest.raises(ValueError):
        p.core.send_data(sid, b"z")
    p.peer.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    p.pump()
    assert p.core.window(sid) == 900  # the delta applies to open streams
    # after the table size change our next head announces our (empty) table again
    second = p.core.open_stream(GET, end_stream=True)
    p.pump()
    assert [e.headers for e in p.peer_of(h2.events.RequestReceived)][-1] == GET
    assert second == sid + 2


def test_peer_hpack_indexing_eviction_and_table_size_updates() -> None:
    """h2's encoder indexes every field: many distinct heads evict entries; our decoder
    follows, including when the peer's encoder shrinks its table mid-connection."""
    p = Pair(client=False)
    for i in range(60):
        sid = p.peer.get_next_available_stream_id()
        head = [*GET, (f"x-field-{i % 7}", "v" * (i * 13 % 300)), ("x-same", "same"),
                ("cookie", f"c={i}")]
        if i == 30:
            p.peer.encoder.header_table_size = 100  # emits a size update in the next block
        p.peer.send_headers(sid, head, end_stream=True)
        p.pump()
        assert p.of(HEADERS_RECEIVED)[-1][2] == head
        p.core.send_headers(sid, [(":status", "204")], end_stream=True)
        p.pump()
    assert p.core.decoder.size <= 4096


def test_continuation_both_ways() -> None:
    p = Pair(client=True)
    big = [*GET, *((f"x-big-{i}", "q" * 1000) for i in range(40))]  # ~40 KiB > 16 KiB frames
    sid = p.core.open_stream(big, end_stream=True)
    p.pump()
    assert p.peer_of(h2.events.RequestReceived)[0].headers == big
    p.peer.send_headers(sid, [(":status", "200"), *big[4:]], end_stream=True)
    p.pump()
    assert p.of(HEADERS_RECEIVED) == [(HEADERS_RECEIVED, sid, [(":status", "200"), *big[4:]],
                                       True)]


def test_data_from_views_of_bytes_arrives_whole() -> None:
    p = Pair(client=False)
    sid = p.peer.get_next_available_stream_id()
    p.peer.send_headers(sid, GET, end_stream=True)
    p.pump()
    p.core.send_headers(sid, [(":status", "200")], end_stream=False)
    body = bytes(range(256)) * 100
    view = memoryview(body)
    p.core.send_data(sid, view[:9000])
    p.core.send_data(sid, view[9000:20000])
    p.core.send_data(sid, view[20000:], end_stream=True)
    p.pump()
    assert b"".join(e.data for e in p.peer_of(h2.events.DataReceived)) == body


def test_flow_control_waits_for_window_updates() -> None:
    p = Pair(client=False)
    sid = p.peer.get_next_available_stream_id()
    p.peer.send_headers(sid, GET, end_stream=True)
    p.pump()
    p.core.send_headers(sid, [(":status", "200")], end_stream=False)
    sent = 0
    while (room := min(p.core.window(sid), p.core.max_outbound_frame_size)) > 0:
        p.core.send_data(sid, b"d" * room)
        sent += room
    assert sent == 65535  # h2's default windows
    p.events.clear()
    p.pump()
    got = sum(len(e.data) for e in p.peer_of(h2.events.DataReceived))
    assert got == sent
    p.peer.acknowledge_received_data(got, sid)
    p.pump()
    assert p.of(WINDOW_OPENED) and p.core.window(sid) > 0


def test_resets_pings_and_goaway() -> None:
    p = Pair(client=False)
    one = p.peer.get_next_available_stream_id()
    p.peer.send_headers(one, GET)
    p.pump()
    p.peer.reset_stream(one, 8)
    p.peer.ping(b"12345678")
    p.pump()
    assert p.of(STREAM_RESET) == [(STREAM_RESET, one, 8)]
    assert p.peer_of(h2.events.PingAckReceived)[0].ping_data == b"12345678"
    with pytest.raises(StreamStateError):
        p.core.send_data(one, b"late")
    two = p.peer.get_next_available_stream_id()
    p.peer.send_headers(two, GET)
    p.pump()
    assert p.core.reset_stream(two, ErrorCode.CANCEL)
    assert not p.core.reset_stream(two, ErrorCode.CANCEL)  # already over
    p.peer.send_data(two, b"in flight")  # after our reset: ignored, connection credit back
    p.pump()
    assert p.peer_of(h2.events.StreamReset)[0].error_code == ErrorCode.CANCEL
    assert not p.core.closed
    p.peer.close_connection(error_code=0, last_stream_id=two)
    p.pump()
    assert p.of(GOAWAY_RECEIVED) == [(GOAWAY_RECEIVED, 0, two)]
    p.core.close(0)
    p.pump()
    assert p.peer_of(h2.events.ConnectionTerminated)


def test_byte_at_a_time_gives_the_same_events() -> None:
    peer = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    peer.initiate_connection()
    sid = peer.get_next_available_stream_id()
    peer.send_headers(sid, GET)
    peer.send_data(sid, b"a" * 3000, pad_length=9, end_stream=True)
    wire = peer.data_to_send()
    whole = H2Core(client=False, settings=SERVER_SETTINGS).receive(wire)
    core = H2Core(client=False, settings=SERVER_SETTINGS)
    events = [e for i in range(len(wire)) for e in core.receive(wire[i:i + 1])]
    assert events == whole
    assert [e[0] for e in whole] == [WINDOW_OPENED, HEADERS_RECEIVED, DATA_RECEIVED, STREAM_ENDED]


PREFACE_AND_SETTINGS = f.PREFACE + f.frame(f.SETTINGS, 0, 0)
HEAD = bytes([0x82, 0x86, 0x84, 0x41, 0x01, 0x61])  # GET http / :authority a


@pytest.mark.parametrize(("wire", "code"), [
    (b"GET / HTTP/1.1\r\n\r\n" + b"x" * 20, ErrorCode.PROTOCOL_ERROR),
    (f.PREFACE + f.frame(f.PING, 0, 0, b"12345678"), ErrorCode.PROTOCOL_ERROR),  # not SETTINGS
    (PREFACE_AND_SETTINGS + f.HEADER.pack((1 << 16) + 1 << 8 | f.DATA, 0, 1),
     ErrorCode.FRAME_SIZE_ERROR),
    (PREFACE_AND_SETTINGS + f.frame(f.DATA, 0, 1, b"x"), ErrorCode.PROTOCOL_ERROR),  # idle
    (PREFACE_AND_SETTINGS + f.frame(f.HEADERS, 4, 2, HEAD), ErrorCode.PROTOCOL_ERROR),  # even
    (PREFACE_AND_SETTINGS + f.frame(f.HEADERS, 4, 1, b"\xff\xff\xff\xff\x0f"),
     ErrorCode.COMPRESSION_ERROR),  # index far out of the table
    (PREFACE_AND_SETTINGS + f.frame(f.HEADERS, 4, 1, b"\xbf\xff\xff\xff\xff\xff\xff"),
     ErrorCode.COMPRESSION_ERROR),  # an integer beyond 2^28
    (PREFACE_AND_SETTINGS + f.frame(f.HEADERS, 4, 1, b"\x00\x05ab"),
     ErrorCode.COMPRESSION_ERROR),  # a string past the block
    (PREFACE_AND_SETTINGS + f.frame(f.HEADERS, 4, 1, b"\x82\x3f\xe1\x1f"),
     ErrorCode.COMPRESSION_ERROR),  # a table size update after a field
    (PREFACE_AND_SETTINGS + f.frame(f.HEADERS, 0, 1, HEAD) + f.frame(f.PING, 0, 0, b"1" * 8),
     ErrorCode.PROTOCOL_ERROR),  # no CONTINUATION inside a header block
    (PREFACE_AND_SETTINGS + f.frame(f.CONTINUATION, 4, 1, HEAD), ErrorCode.PROTOCOL_ERROR),
    (PREFACE_AND_SETTINGS + f.frame(f.HEADERS, 0, 1, HEAD)
     + f.frame(f.CONTINUATION, 0, 1, b"\x00" * 60000) * 5, ErrorCode.ENHANCE_YOUR_CALM),
    (PREFACE_AND_SETTINGS + f.frame(f.HEADERS, 0, 1, HEAD)
     + f.frame(f.CONTINUATION, 0, 1) * 1100, ErrorCode.ENHANCE_YOUR_CALM),
    (PREFACE_AND_SETTINGS + f.frame(f.HEADERS, 5, 1, HEAD + b"\x40\x01x\x7f\x00"
                                    + b"\x00\x01y\x7f\x81\xff\x03" + b"y" * 66000 ),
     ErrorCode.FRAME_SIZE_ERROR),  # bigger than our 64 KiB frames
    (PREFACE_AND_SETTINGS + f.window_update(0, 2**31 - 1), ErrorCode.FLOW_CONTROL_ERROR),
    (PREFACE_AND_SETTINGS + f.window_update(0, 0), ErrorCode.PROTOCOL_ERROR),
    (PREFACE_AND_SETTINGS + f.window_update(9, 1), ErrorCode.PROTOCOL_ERROR),  # idle
    (PREFACE_AND_SETTINGS + f.frame(f.WINDOW_UPDATE, 0, 0, b"abc"), ErrorCode.FRAME_SIZE_ERROR),
    (PREFACE_AND_SETTINGS + f.rst_stream(3, 0), ErrorCode.PROTOCOL_ERROR),  # idle
    (PREFACE_AND_SETTINGS + f.frame(f.PING, 0, 0, b"short"), ErrorCode.FRAME_SIZE_ERROR),
    (PREFACE_AND_SETTINGS + f.frame(f.PING, 0, 1, b"12345678"), ErrorCode.PROTOCOL_ERROR),
    (PREFACE_AND_SETTINGS + f.frame(f.SETTINGS, 0, 0, b"\x00\x04"), ErrorCode.FRAME_SIZE_ERROR),
    (PREFACE_AND_SETTINGS + f.settings_frame({Setting.INITIAL_WINDOW_SIZE: 2**31}),
     ErrorCode.FLOW_CONTROL_ERROR),
    (PREFACE_AND_SETTINGS + f.settings_frame({Setting.MAX_FRAME_SIZE: 100}),
     ErrorCode.PROTOCOL_ERROR),
    (PREFACE_AND_SETTINGS + f.settings_frame({Setting.ENABLE_PUSH: 2}), ErrorCode.PROTOCOL_ERROR),
    (PREFACE_AND_SETTINGS + f.frame(f.SETTINGS, f.ACK, 0, b"x" * 6), ErrorCode.FRAME_SIZE_ERROR),
    (PREFACE_AND_SETTINGS + f.frame(f.PUSH_PROMISE, 4, 1, b"\x00\x00\x00\x02"),
     ErrorCode.PROTOCOL_ERROR),
    (PREFACE_AND_SETTINGS + f.frame(f.GOAWAY, 0, 0, b"1234"), ErrorCode.FRAME_SIZE_ERROR),
    (PREFACE_AND_SETTINGS + f.frame(f.HEADERS, 0x8 | 4, 1, b"\x09" + HEAD),
     ErrorCode.PROTOCOL_ERROR),  # padding longer than the frame
])
def test_hostile_input_gets_goaway_with_the_right_code(wire: bytes, code: ErrorCode) -> None:
    core = H2Core(client=False, settings=SERVER_SETTINGS)
    core.initiate()
    core.data_to_send()
    with pytest.raises(H2ProtocolError) as info:
        core.receive(wire)
    assert info.value.code == code
    assert goaway_code(core.data_to_send()) == code
    assert core.closed and core.receive(b"more") == []


def test_data_beyond_the_windows() -> None:
    core = H2Core(client=False, settings=SERVER_SETTINGS, connection_window=16 << 20)
    core.receive(PREFACE_AND_SETTINGS + f.frame(f.HEADERS, 4, 1, HEAD))
    chunk = f.frame(f.DATA, 0, 1, b"x" * 65536)
    events = core.receive(chunk * 16)  # the stream window (1 MiB) is full
    assert sum(len(e[2]) for e in events if e[0] == DATA_RECEIVED) == 1 << 20
    assert core.receive(f.frame(f.DATA, 0, 1, b"!")) == [(STREAM_RESET, 1, 3)]  # stream error
    assert f.rst_stream(1, ErrorCode.FLOW_CONTROL_ERROR) in core.data_to_send()
    with pytest.raises(H2ProtocolError) as info:  # 16 more streams fill the connection window
        for sid in range(3, 37, 2):
            core.receive(f.frame(f.HEADERS, 4, sid, HEAD) + f.frame(f.DATA, 0, sid, b"x" * 65536)
                         * 16)
    assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR


def test_self_dependency_and_bad_status_are_stream_errors() -> None:
    server = H2Core(client=False, settings=SERVER_SETTINGS)
    prio = struct.pack(">IB", 1, 16)
    events = server.receive(PREFACE_AND_SETTINGS + f.frame(f.HEADERS, 0x20 | 4, 1, prio + HEAD))
    assert events == [(WINDOW_OPENED,)] and server.streams == {}
    assert f.rst_stream(1, ErrorCode.PROTOCOL_ERROR) in server.data_to_send()
    client = H2Core(client=True, settings=CLIENT_SETTINGS)
    client.receive(f.frame(f.SETTINGS, 0, 0))
    sid = client.open_stream(GET, end_stream=True)
    bad = bytes([0x08, 0x02]) + b"2x"  # :status (name index 8) "2x"
    assert client.receive(f.frame(f.HEADERS, 4, sid, bad)) == [
        (STREAM_RESET, sid, ErrorCode.PROTOCOL_ERROR)]
    with pytest.raises(H2ProtocolError):  # a response to a stream we never opened
        client.receive(f.frame(f.HEADERS, 4, sid + 2, bytes([0x88])))


@fuzz_target(st.lists(st.tuples(st.integers(0, 12), st.integers(0, 255), st.integers(0, 9),
                                st.binary(max_size=64)), max_size=12),
             st.integers(1, 64))
def _any_frames_end_in_events_or_a_protocol_error(
        frames_: list[tuple[int, int, int, bytes]], step: int) -> None:
    """Arbitrary frames, cut anywhere: events or H2ProtocolError, nothing else, and a GOAWAY
    with the error; the work and the output stay within the input's size."""
    core = H2Core(client=False, settings=SERVER_SETTINGS)
    wire = PREFACE_AND_SETTINGS + b"".join(f.frame(*fr) for fr in frames_)
    try:
        for i in range(0, len(wire), step):
            core.receive(wire[i:i + step])
    except H2ProtocolError as exc:
        assert goaway_code(core.data_to_send()) == exc.code
    assert len(core.data_to_send()) <= 64 + 17 * len(wire)


@fuzz_target(st.lists(st.lists(st.tuples(
    st.sampled_from([":path", "accept", "x-a", "x-b", "cookie"]), st.text(max_size=40)),
    max_size=8), max_size=10), st.sampled_from([0, 64, 256, 4096]))
def _decoder_follows_hpack_encoder(heads: list[list[tuple[str, str]]], size: int) -> None:
    """Whatever the hpack library's encoder indexes, evicts or resizes, our decoder agrees."""
    enc = hpack.Encoder()
    dec = Decoder()
    for i, head in enumerate(heads):
        if i == 1:
            enc.header_table_size = size
        fields = [(n, v.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape"))
                  for n, v in head]
        assert dec.decode(enc.encode(fields)) == fields
        assert dec.size == enc.header_table._current_size


@fuzz_target(st.lists(st.tuples(st.text(min_size=1, max_size=20), st.text(max_size=100)),
                     max_size=10))
def _our_encoding_decodes_with_hpack(head: list[tuple[str, str]]) -> None:
    enc = Encoder()
    block = enc.encode(head) + enc.encode(head)
    assert hpack.Decoder().decode(block, raw=True) == [
        (n.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape"))
        for n, v in head * 2]


_field_names = st.one_of(st.sampled_from([":status", ":path", "accept", "user-agent", "cookie",
                                          "www-authenticate", "x-unknown", "cf-ray"]),
                         st.text(min_size=1, max_size=20))
_field_values = st.one_of(st.text(max_size=20), st.text(max_size=300),
                          st.binary(max_size=200).map(
                              lambda b: b.decode("utf-8", "surrogateescape")))


@fuzz_target(st.lists(st.lists(st.tuples(_field_names, _field_values), max_size=8), max_size=4))
def _our_encoding_round_trips(heads: list[list[tuple[str, str]]]) -> None:
    """Our encoder and our decoder (its raw-literal fast paths included) agree, head after
    head, and hpack's decoder reads the same."""
    enc, dec, ref = Encoder(), Decoder(max_list_size=1 << 20), hpack.Decoder()
    for head in heads:
        block = enc.encode(head)
        assert dec.decode(block) == head
        assert ref.decode(block, raw=True) == [
            (n.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape"))
            for n, v in head]


test_any_frames_end_in_events_or_a_protocol_error, test_fuzz_any_frames = (
    _any_frames_end_in_events_or_a_protocol_error)
test_decoder_follows_hpack_encoder, test_fuzz_decoder_follows_hpack_encoder = (
    _decoder_follows_hpack_encoder)
test_our_encoding_decodes_with_hpack, test_fuzz_our_encoding_decodes_with_hpack = (
    _our_encoding_decodes_with_hpack)
test_our_encoding_round_trips, test_fuzz_our_encoding_round_trips = _our_encoding_round_trips


def test_caches_keep_no_long_strings() -> None:
    """Caches are bounded in entries and in what each entry may hold: a peer or a visitor
    sending long distinct fields does not grow them."""
    from nbtunnel.core.h2 import hpack as ours

    enc, dec = hpack.Encoder(), Decoder(max_list_size=1 << 20)
    for i in range(300):  # long Huffman-coded values, each new
        dec.decode(enc.encode([(f"x-{i}", "v" * 500 + str(i))]))
    assert all(len(raw) <= 64 for raw in dec._huffman)
    ours_enc = Encoder()
    before = dict(ours._CACHE)
    ours_enc.encode([(f"x-long-{i}", "y" * 600) for i in range(100)])
    ours_enc.encode([("n" * 600, "short")])
    assert all(len(n) + len(v) <= 512 for n, v in ours._CACHE if (n, v) not in before)
