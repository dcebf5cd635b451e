"""The pure-Python Cap'n Proto codec: framing, far pointers, limits, builder round trips."""

from __future__ import annotations

import struct

import pytest
from core_vectors import frame_segments

from nbtunnel.core.capnp_read import MessageReader, frame_length, read_message
from nbtunnel.core.capnp_write import MessageBuilder
from nbtunnel.core.errors import DecodeError


def w(v: int) -> bytes:
    return struct.pack("<Q", v)


def struct_ptr(off: int, dw: int, pc: int) -> int:
    return ((off << 2) & 0xFFFFFFFF) | (dw << 32) | (pc << 48)


def far_ptr(seg: int, off: int, double: bool = False) -> int:
    return 2 | (int(double) << 2) | (off << 3) | (seg << 32)


def test_frame_length_needs_full_header() -> None:
    assert frame_length(b"") is None
    assert frame_length(b"\x00\x00\x00\x00") is None
    assert frame_length(b"\x00\x00\x00\x00\x02\x00\x00\x00") == 24
    # two segments: header is 4 + 8 = 12 bytes, padded to 16
    assert frame_length(b"\x01\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00") == 16 + 24


def test_frame_length_limits() -> None:
    with pytest.raises(DecodeError):
        frame_length(b"\xff\xff\xff\xff")
    with pytest.raises(DecodeError):
        frame_length(b"\x00\x00\x00\x00\xff\xff\xff\x00", max_size=1024)


def test_builder_reader_round_trip() -> None:
    mb = MessageBuilder()
    root = mb.init_root(2, 4)
    root.set_u16(0, 0xBEEF)
    root.set_u32(1, 0xDEADBEEF)
    root.set_u64(1, (1 << 64) - 5)
    root.set_bool(17, True)
    root.set_text(0, "héllo")
    root.set_data(1, b"\x00\x01\x02")
    root.set_text_list(2, ["a", "", "ccc"])
    for i, item in enumerate(root.init_struct_list(3, 3, 1, 1)):
        item.set_u8(0, i)
        item.set_text(0, f"x{i}")
    reader, used = read_message(mb.to_bytes())
    assert used == len(mb.to_bytes())
    r = reader.root()
    got = (r.u16(0), r.u32(1), r.i64(1), r.bit(17), r.bit(16))
    assert got == (0xBEEF, 0xDEADBEEF, -5, True, False)
    assert r.text(0) == "héllo" and r.data(1) == b"\x00\x01\x02"
    assert r.texts(2) == ["a", "", "ccc"]
    assert [(s.u8(0), s.text(0)) for s in r.structs(3)] == [(0, "x0"), (1, "x1"), (2, "x2")]
    # reads past the struct's sections give defaults (schema evolution)
    assert r.u64(9) == 0 and r.struct(7) is None and r.text(5) == ""


def test_single_far_pointer() -> None:
    seg0 = w(far_ptr(1, 0))
    seg1 = w(struct_ptr(0, 1, 0)) + w(42)
    r = read_message(frame_segments([seg0, seg1]))[0].root()
    assert r.u64(0) == 42


def test_double_far_pointer() -> None:
    seg0 = w(far_ptr(1, 0, double=True))
    seg1 = w(far_ptr(2, 0)) + w(struct_ptr(0, 1, 0))  # landing pad: far + tag
    seg2 = w(7)
    r = read_message(frame_segments([seg0, seg1, seg2]))[0].root()
    assert r.u64(0) == 7


@pytest.mark.parametrize(
    "segments",
    [
        [w(far_ptr(5, 0))],  # unknown segment
        [w(far_ptr(1, 3)), w(0)],  # landing pad out of bounds
        [w(far_ptr(1, 0)), w(far_ptr(0, 0))],  # pad is another far pointer
        [w(far_ptr(1, 0, True)), w(struct_ptr(0, 1, 0)) + w(0)],  # double-far pad not a far
        [w(struct_ptr(5, 1, 0))],  # struct out of bounds
        [w(struct_ptr(-3, 1, 0))],  # negative offset out of bounds
    ],
)
def test_bad_pointers_raise_decode_error(segments: list[bytes]) -> None:
    with pytest.raises(DecodeError):
        r = read_message(frame_segments(segments))[0].root()
        r.u64(0)


def test_cyclic_pointer_hits_nesting_limit() -> None:
    # root struct whose only pointer points back at itself
    seg = w(struct_ptr(0, 0, 1)) + w(struct_ptr(-1, 0, 1))
    r = read_message(frame_segments([seg]))[0].root()
    with pytest.raises(DecodeError, match=r"nesting|traversal"):
        for _ in range(1000):
            nxt = r.struct(0)
            assert nxt is not None
            r = nxt


def test_traversal_limit_stops_amplification() -> None:
    # a list of 2**28 zero-sized structs takes one word but must not be walked for free
    tag = struct_ptr(1 << 28, 0, 0)
    lst = 1 | (7 << 32)  # composite, 0 words
    seg = w(struct_ptr(0, 0, 1)) + w(lst) + w(tag)
    reader = MessageReader([seg], traversal_limit_words=1000)
    with pytest.raises(DecodeError, match="traversal"):
        reader.root().structs(0)


def test_text_must_be_utf8() -> None:
    mb = MessageBuilder()
    mb.init_root(0, 1).set_data(0, b"\xff\xfe\x00")
    with pytest.raises(DecodeError):
        read_message(mb.to_bytes())[0].root().text(0)


def test_truncated_message() -> None:
    mb = MessageBuilder()
    mb.init_root(1, 0).set_u64(0, 1)
    raw = mb.to_bytes()
    with pytest.raises(DecodeError):
        read_message(raw[:-1])


def test_pycapnp_multi_segment_message_is_readable(pycapnp) -> None:  # type: ignore[no-untyped-def]
    mb = pycapnp.capnp._MallocMessageBuilder(2)
    root = mb.init_root(pycapnp.quic.ConnectRequest.schema)
    root.dest = "https://example.com/" + "x" * 50
    root.type = "websocket"
    entries = root.init("metadata", 4)
    for i, e in enumerate(entries):
        e.key = f"HttpHeader:K{i}" * 3
        e.val = "v" * (10 + i)
    segments = mb.get_segments_for_output()
    assert len(segments) > 1
    r = read_message(frame_segments(list(segments)))[0].root()
    assert r.text(0) == root.dest and r.u16(0) == 1
    assert [(e.text(0), e.text(1)) for e in r.structs(1)] == [
        (f"HttpHeader:K{i}" * 3, "v" * (10 + i)) for i in range(4)
    ]
