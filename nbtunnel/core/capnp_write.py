"""Minimal Cap'n Proto builder: one segment, objects laid out in the order they are created.

Allocation order decides the bytes, so encoders call these methods in the same order as
go-capnp (cloudflared) does; that is what lets golden tests compare our output byte for byte.
"""

from __future__ import annotations

import struct

from nbtunnel.core.capnp_read import ListInfo, StructReader, list_structs
from nbtunnel.core.errors import DecodeError

_U64 = struct.Struct("<Q")


class MessageBuilder:
    """A single-segment message under construction."""

    def __init__(self) -> None:
        self.buf = bytearray(8)  # word 0 is the root pointer

    def alloc(self, words: int) -> int:
        index = len(self.buf) // 8
        self.buf.extend(bytes(8 * words))
        return index

    def set_word(self, index: int, value: int) -> None:
        _U64.pack_into(self.buf, index * 8, value)

    def init_root(self, data_words: int, ptr_count: int) -> StructBuilder:
        return StructBuilder(self, 0, 0, 0).init_struct_at(0, data_words, ptr_count)

    def to_bytes(self) -> bytes:
        """Standard stream framing: segment count - 1, segment size, then the segment."""
        return (0).to_bytes(4, "little") + (len(self.buf) // 8).to_bytes(4, "little") + bytes(
            self.buf
        )


def _struct_ptr(offset: int, data_words: int, ptr_count: int) -> int:
    return ((offset << 2) & 0xFFFFFFFF) | (data_words << 32) | (ptr_count << 48)


def _list_ptr(offset: int, elem_size: int, count: int) -> int:
    return (((offset << 2) | 1) & 0xFFFFFFFF) | (elem_size << 32) | (count << 35)


class StructBuilder:
    """Setters for one struct; offsets are in units of the field size, like the schema."""

    def __init__(
        self, mb: MessageBuilder, data_index: int, data_words: int, ptr_count: int
    ) -> None:
        self.mb = mb
        self.data_index = data_index
        self.data_words = data_words
        self.ptr_index = data_index + data_words
        self.ptr_count = ptr_count

    def _put(self, byte_off: int, size: int, value: int) -> None:
        if byte_off + size > self.data_words * 8:
            raise ValueError("field outside the data section")
        pos = self.data_index * 8 + byte_off
        self.mb.buf[pos : pos + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

    def set_u8(self, off: int, value: int) -> None:
        self._put(off, 1, value)

    def set_u16(self, off: int, value: int) -> None:
        self._put(off * 2, 2, value)

    def set_u32(self, off: int, value: int) -> None:
        self._put(off * 4, 4, value)

    def set_u64(self, off: int, value: int) -> None:
        self._put(off * 8, 8, value)

    def set_bool(self, bit: int, value: bool, default: bool = False) -> None:
        pos = self.data_index * 8 + bit // 8
        if bit // 8 >= self.data_words * 8:
            raise ValueError("field outside the data section")
        if value != default:
            self.mb.buf[pos] |= 1 << (bit % 8)
        else:
            self.mb.buf[pos] &= ~(1 << (bit % 8)) & 0xFF

    def _slot(self, i: int) -> int:
        if not 0 <= i < self.ptr_count:
            raise ValueError("pointer index outside the pointer section")
        return self.ptr_index + i

    def init_struct_at(self, slot: int, data_words: int, ptr_count: int) -> StructBuilder:
        target = self.mb.alloc(data_words + ptr_count)
        self.mb.set_word(slot, _struct_ptr(target - slot - 1, data_words, ptr_count))
        return StructBuilder(self.mb, target, data_words, ptr_count)

    def init_struct(self, i: int, data_words: int, ptr_count: int) -> StructBuilder:
        return self.init_struct_at(self._slot(i), data_words, ptr_count)

    def set_empty_struct(self, i: int) -> None:
        """Zero-sized struct: offset -1, as go-capnp writes empty params."""
        self.mb.set_word(self._slot(i), _struct_ptr(-1, 0, 0))

    def set_capability(self, i: int, index: int) -> None:
        self.mb.set_word(self._slot(i), 3 | (index << 32))

    def set_data(self, i: int, value: bytes, *, null_if_empty: bool = True) -> None:
        if not value and null_if_empty:
            return
        self._bytes(i, value, len(value))

    def set_text(self, i: int, value: str, *, null_if_empty: bool = True) -> None:
        if not value and null_if_empty:
            return
        raw = value.encode("utf-8", "surrogateescape")  # raw bytes kept (see text_raw)
        self._bytes(i, raw + b"\x00", len(raw) + 1)

    def _bytes(self, i: int, raw: bytes, count: int) -> None:
        slot = self._slot(i)
        target = self.mb.alloc((count + 7) // 8)
        self.mb.buf[target * 8 : target * 8 + len(raw)] = raw
        self.mb.set_word(slot, _list_ptr(target - slot - 1, 2, count))

    def init_struct_list(
        self, i: int, n: int, data_words: int, ptr_count: int
    ) -> list[StructBuilder]:
        """Composite list (always with a tag word, even when empty, like go-capnp)."""
        slot = self._slot(i)
        size = data_words + ptr_count
        tag = self.mb.alloc(1 + n * size)
        self.mb.set_word(slot, _list_ptr(tag - slot - 1, 7, n * size))
        self.mb.set_word(tag, _struct_ptr(n, data_words, ptr_count))
        return [StructBuilder(self.mb, tag + 1 + k * size, data_words, ptr_count) for k in range(n)]

    def set_text_list(self, i: int, values: list[str]) -> None:
        slot = self._slot(i)
        start = self.mb.alloc(len(values))
        self.mb.set_word(slot, _list_ptr(start - slot - 1, 6, len(values)))
        holder = StructBuilder(self.mb, start, 0, len(values))
        for k, v in enumerate(values):
            holder.set_text(k, v, null_if_empty=False)

    def copy_from(self, i: int, src: StructReader, j: int) -> None:
        """Deep-copy pointer ``j`` of ``src`` into pointer ``i`` (for Unimplemented echoes)."""
        _copy_pointer(self, self._slot(i), src, j)


def _copy_pointer(dst: StructBuilder, slot: int, src: StructReader, j: int) -> None:
    if j >= src.ptr_count or src.msg.word(src.seg, src.ptr_start + j) == 0:
        return
    cap = src.capability(j)
    if cap is not None:
        dst.mb.set_word(slot, 3 | (cap << 32))
        return
    _, w, _ = src.msg.resolve(src.seg, src.ptr_start + j)
    kind = w & 3
    if kind == 0:
        s = src.struct(j)
        if s is not None:
            _copy_struct(dst.init_struct_at(slot, (s.data_bytes + 7) // 8, s.ptr_count), s)
        return
    if kind != 1:
        raise DecodeError("cannot copy this pointer")
    info = src.list_info(j)
    if info is None:
        return
    if info.elem_size == 7:
        dw, pc = info.data_bytes // 8, info.ptr_count
        dst.mb.set_word(slot, 0)
        tmp = StructBuilder(dst.mb, slot, 0, 1)
        for d, s in zip(tmp.init_struct_list(0, info.count, dw, pc),
                        list_structs(src.msg, info, src.depth + 1), strict=True):
            _copy_struct(d, s)
        return
    if info.elem_size == 6:
        start = dst.mb.alloc(info.count)
        dst.mb.set_word(slot, _list_ptr(start - slot - 1, 6, info.count))
        holder = StructBuilder(dst.mb, start, 0, info.count)
        reader = StructReader(src.msg, info.seg, info.start, 0, info.start // 8, info.count,
                              src.depth + 1)
        for k in range(info.count):
            _copy_pointer(holder, start + k, reader, k)
        return
    nbytes = (info.count * info.step_bits + 7) // 8
    raw = src.msg.segments[info.seg][info.start : info.start + nbytes]
    target = dst.mb.alloc((nbytes + 7) // 8)
    dst.mb.buf[target * 8 : target * 8 + len(raw)] = raw
    dst.mb.set_word(slot, _list_ptr(target - slot - 1, info.elem_size, info.count))


def _copy_struct(dst: StructBuilder, src: StructReader) -> None:
    pos = src.data_start
    raw = src.msg.segments[src.seg][pos : pos + src.data_bytes]
    dst.mb.buf[dst.data_index * 8 : dst.data_index * 8 + len(raw)] = raw
    for k in range(src.ptr_count):
        _copy_pointer(dst, dst.ptr_index + k, src, k)


__all__ = ["ListInfo", "MessageBuilder", "StructBuilder"]
