"""RFC 9113 / RFC 7541 corners of the sans-I/O HTTP/2 core (core/h2): what Cloudflare's edge
(an HTTP/2 client, here h2 with everything it may use turned on) sends the connector, HPACK
edge cases, and the send side under a window the peer shrank."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

from nbtunnel.core.h2 import frames as f
from nbtunnel.core.h2.connection import (
    DATA_RECEIVED,
    HEADERS_RECEIVED,
    STREAM_ENDED,
    STREAM_RESET,
    Event,
    H2Core,
    H2ProtocolError,
)
from nbtunnel.core.h2.frames import ErrorCode, Setting
from nbtunnel.core.h2.hpack import Decoder, HpackError, encode_int

SERVER_SETTINGS = {Setting.INITIAL_WINDOW_SIZE: 1 << 20, Setting.MAX_FRAME_SIZE: 1 << 16,
                   Setting.MAX_CONCURRENT_STREAMS: 2**31 - 1}
GET = [(":method", "GET"), (":scheme", "https"), (":authority", "app.example.com"),
       (":path", "/a?b=c")]
PREFACE_AND_SETTINGS = f.PREFACE + f.frame(f.SETTINGS, 0, 0)
HEAD = bytes([0x82, 0x86, 0x84, 0x41, 0x01, 0x61])  # GET http / :authority a
huffman = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode


def _server() -> H2Core:
    core = H2Core(client=False, settings=SERVER_SETTINGS, connection_window=16 << 20)
    core.initiate()
    core.receive(PREFACE_AND_SETTINGS)
    core.data_to_send()
    return core


def test_what_cloudflares_edge_may_send_the_connector() -> None:
    """An edge-like client: its own HEADER_TABLE_SIZE and a small frame size, heads indexed
    and Huffman-coded, PRIORITY frames, a head over CONTINUATION frames, empty DATA with
    END_STREAM, trailers after DATA, a mid-connection SETTINGS change."""
    core = H2Core(client=False, settings=SERVER_SETTINGS, connection_window=16 << 20)
    core.initiate()
    edge = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding="utf-8"))
    edge.local_settings = h2.settings.Settings(client=True, initial_values={
        h2.settings.SettingCodes.HEADER_TABLE_SIZE: 65536,
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    edge.initiate_connection()
    events = []

    def pump() -> None:
        for _ in range(20):
            ours, theirs = core.data_to_send(), edge.data_to_send()
            if not ours and not theirs:
                return
            events.extend(core.receive(theirs))
            edge.receive_data(ours)

    pump()
    big = [(f"x-meta-{i}", "v" * 900) for i in range(40)]  # ~36 KiB: CONTINUATION frames
    heads = {}
    for i in range(6):
        sid = edge.get_next_available_stream_id()
        head = [*GET, ("user-agent", "Mozilla/5.0"), ("cf-ray", f"{i:016x}-LHR"),
                ("cookie", f"session={i}")]
        if i == 2:
            head += big
        heads[sid] = head
        edge.send_headers(sid, head, priority_weight=40, priority_depends_on=0)
        edge.prioritize(sid, weight=200)
        if i % 2:
            edge.send_data(sid, b"body", pad_length=7)
            edge.send_headers(sid, [("grpc-status", "0")], end_stream=True)  # trailers
        else:
            edge.send_data(sid, b"")
            edge.end_stream(sid)  # an empty DATA frame with END_STREAM
        if i == 3:
            edge.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 0})
        pump()
        core.send_headers(sid, [(":status", "200"), ("content-type", "text/plain")],
                          end_stream=True)
        pump()
    assert not core.closed
    assert [(e[1], e[2]) for e in events if e[0] == HEADERS_RECEIVED] == list(heads.items())
    assert [e[1] for e in events if e[0] == STREAM_ENDED] == list(heads)
    assert [e[1:] for e in events if e[0] == DATA_RECEIVED] == [
        (sid, b"body") for sid in list(heads)[1::2]]
    assert core.streams == {}


def test_end_stream_goes_out_when_the_peer_shrank_the_window_below_zero() -> None:
    core = _server()
    core.receive(f.frame(f.HEADERS, 4, 1, HEAD))
    core.send_headers(1, [(":status", "200")], end_stream=False)
    for _ in range(4):
        core.send_data(1, b"x" * 16000)
    core.receive(f.settings_frame({Setting.INITIAL_WINDOW_SIZE: 1000}))
    assert core.window(1) == 1000 - 64000  # RFC 9113 §6.9.2: it may go negative
    with pytest.raises(ValueError):
        core.send_data(1, b"y")
    core.end_stream(1)
    assert f.frame(f.DATA, f.END_STREAM, 1) in core.data_to_send()


def test_decoded_huffman_strings_cached_are_short_ones() -> None:
    """A peer sending ever new long Huffman strings does not park them in the decoder."""
    decoder = Decoder()
    for i in range(250):  # fewer than the entries kept
        raw = huffman(f"{i:04d}".encode() + b"a" * 2000)
        block = b"\x00\x01x" + encode_int(len(raw), 7, 0x80) + raw
        assert decoder.decode(block)[0][1][4:] == "a" * 2000
    short = huffman(b"text/html")
    assert decoder.decode(b"\x00\x01x" + encode_int(len(short), 7, 0x80) + short)
    assert sum(len(k) for k in decoder._huffman) <= 256 * 256


@pytest.mark.parametrize(("block", "why"), [
    (b"\x80", "index 0"),
    (b"\xbf\x00", "index 62, the dynamic table is empty"),
    (b"\x40\x01a\x01b\xbf\x01", "index 63, one entry in the table"),
    (b"\x3f\xe2\x1f", "a size update above our 4096"),
    (b"\x00\x01x\x81\xff", "Huffman padding longer than 7 bits"),
    (b"\x00\x01x\x81\x18", "Huffman padding not all ones"),
    (b"\x00\x01x\x84\xff\xff\xff\xff", "Huffman EOS"),
    (b"\x00\x01x\xff\xff\xff\xff\xff\x7f", "a string length beyond 2^28"),
])
def test_hpack_blocks_the_rfc_calls_errors(block: bytes, why: str) -> None:
    with pytest.raises(HpackError):
        Decoder().decode(block)
    core = _server()
    with pytest.raises(H2ProtocolError) as info:
        core.receive(f.frame(f.HEADERS, 5, 1, HEAD + block if block[0] & 0xE0 != 0x20
                             else block + HEAD))
    assert info.value.code == ErrorCode.COMPRESSION_ERROR, why


def test_table_size_updates_at_the_start_evict() -> None:
    decoder = Decoder()
    assert decoder.decode(b"\x40\x01a\x01b" + b"\x40\x01c\x01d") == [("a", "b"), ("c", "d")]
    assert decoder.size == 2 * 34
    # two updates (the smallest, then the final size: RFC 7541 §4.2), then an indexed field
    assert decoder.decode(b"\x20\x3f\xe1\x1f\x82") == [(":method", "GET")]
    assert decoder.size == 0 and decoder.max_size == 4096
    with pytest.raises(HpackError):  # the table is empty now
        decoder.decode(b"\xbe")
    assert decoder.decode(b"\x3f\x03" + b"\x40\x01a\x01b" + b"\x40\x01c\x01d") == [
        ("a", "b"), ("c", "d")]
    assert decoder.size == 34 and decoder.decode(b"\xbe") == [("c", "d")]  # 34 bytes hold one


def _h2_pair(*, client: bool) -> tuple[H2Core, h2.connection.H2Connection, list[Event],
                                       list[object]]:
    settings = ({Setting.ENABLE_PUSH: 0, Setting.INITIAL_WINDOW_SIZE: 1 << 20,
                 Setting.MAX_FRAME_SIZE: 1 << 16} if client else SERVER_SETTINGS)
    core = H2Core(client=client, settings=settings, connection_window=16 << 20)
    core.initiate()
    peer = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=not client, header_encoding="utf-8"))
    peer.initiate_connection()
    return core, peer, [], []


def _pump(core: H2Core, peer: h2.connection.H2Connection, events: list[Event],
          peer_events: list[object]) -> None:
    for _ in range(20):
        ours, theirs = core.data_to_send(), peer.data_to_send()
        if not ours and not theirs:
            return
        events.extend(core.receive(theirs))
        peer_events.extend(peer.receive_data(ours))


HUGE = [(f"x-{i % 8}", f"{i:04d}" + "v" * 996) for i in range(70)]  # ~72 KiB decoded
"""Larger than the 64 KiB header list we accept; h2's encoder indexes each field as it goes,
so the block also moves the peer's dynamic table (evictions included)."""


def test_an_oversized_request_head_is_answered_431_and_the_connection_goes_on() -> None:
    core, edge, events, edge_events = _h2_pair(client=False)
    _pump(core, edge, events, edge_events)
    huge = edge.get_next_available_stream_id()
    edge.send_headers(huge, [*GET, *HUGE])  # a body would follow
    _pump(core, edge, events, edge_events)
    after = edge.get_next_available_stream_id()
    edge.send_headers(after, [*GET, *HUGE[-3:]], end_stream=True)  # indexed by the block
    _pump(core, edge, events, edge_events)
    assert not core.closed
    assert [e[1:] for e in events if e[0] == HEADERS_RECEIVED] == [
        (after, [*GET, *HUGE[-3:]], True)]
    (answer,) = [e for e in edge_events if isinstance(e, h2.events.ResponseReceived)]
    assert (answer.stream_id, answer.headers) == (huge, [(":status", "431")])
    (reset,) = [e for e in edge_events if isinstance(e, h2.events.StreamReset)]
    assert (reset.stream_id, reset.error_code) == (huge, ErrorCode.NO_ERROR)


def test_an_oversized_response_head_resets_its_stream_only() -> None:
    core, connector, events, _ = _h2_pair(client=True)
    _pump(core, connector, events, [])
    one = core.open_stream(GET, end_stream=True)
    two = core.open_stream(GET, end_stream=True)
    _pump(core, connector, events, [])
    connector.send_headers(one, [(":status", "200"), *HUGE], end_stream=True)
    connector.send_headers(two, [(":status", "200"), *HUGE[-3:]], end_stream=True)
    _pump(core, connector, events, [])
    assert not core.closed
    assert (STREAM_RESET, one, ErrorCode.CANCEL) in events
    assert [e[1:] for e in events if e[0] == HEADERS_RECEIVED] == [
        (two, [(":status", "200"), *HUGE[-3:]], True)]


@pytest.mark.parametrize(("frames", "code"), [
    (f.frame(f.HEADERS, 5, 1, HEAD) + f.frame(f.DATA, 0, 1, b"x"), ErrorCode.STREAM_CLOSED),
    (f.frame(f.HEADERS, 4, 1, HEAD) + f.frame(f.PRIORITY, 0, 1, b"1234"),
     ErrorCode.FRAME_SIZE_ERROR),
    (f.frame(f.HEADERS, 4, 1, HEAD) + f.window_update(1, 0), ErrorCode.PROTOCOL_ERROR),
    (f.frame(f.HEADERS, 4, 1, HEAD) + f.window_update(1, 2**31 - 1),
     ErrorCode.FLOW_CONTROL_ERROR),
    (f.frame(f.HEADERS, 4, 1, HEAD) + f.frame(f.HEADERS, 4, 1, b"\x88"),
     ErrorCode.PROTOCOL_ERROR),  # trailers without END_STREAM
    (f.frame(f.HEADERS, 5, 1, HEAD) + f.frame(f.HEADERS, 5, 1, b"\x88"),
     ErrorCode.STREAM_CLOSED),  # a head after END_STREAM
])
def test_stream_errors_reset_one_stream_and_the_connection_goes_on(
        frames: bytes, code: ErrorCode) -> None:
    core = _server()
    events = core.receive(frames)
    assert (STREAM_RESET, 1, code) in events
    assert f.rst_stream(1, code) in core.data_to_send()
    assert 1 not in core.streams and not core.closed
    events = core.receive(f.frame(f.HEADERS, 5, 3, HEAD))  # the next request is served
    assert [e[:2] for e in events] == [(HEADERS_RECEIVED, 3)]


def test_data_before_the_response_head_resets_the_stream() -> None:
    core = H2Core(client=True, settings={Setting.ENABLE_PUSH: 0})
    core.receive(f.frame(f.SETTINGS, 0, 0))
    sid = core.open_stream(GET, end_stream=True)
    assert core.receive(f.frame(f.DATA, 0, sid, b"early")) == [
        (STREAM_RESET, sid, ErrorCode.PROTOCOL_ERROR)]
    assert not core.closed
