"""Minimal Cap'n Proto reader: stream framing, far pointers, structs, lists, text, data.

Pure Python so the protocol core has no native dependency. Every failure is a
:class:`DecodeError`; hostile input is bounded by a size cap, a traversal budget and a nesting
limit, so decoding never hangs or recurses deeply.

The traversal budget is what makes the reader amplification-safe: every object visited is
charged its size in words and every list element at least one word (zero-size elements
included: a 100-byte message may declare a billion of them), and the budget is proportional to
the message's own size (:data:`TRAVERSAL_WORDS_PER_WORD` per word, at least
:data:`TRAVERSAL_FLOOR_WORDS`). Decoding work, and the number of objects built, is therefore
bounded by a small multiple of the input size, like Cap'n Proto's own traversal limit.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from nbtunnel.core.errors import DecodeError

MAX_MESSAGE_SIZE = 8 * 1024 * 1024
MAX_SEGMENTS = 512
TRAVERSAL_LIMIT_WORDS = 8 * 1024 * 1024  # absolute cap, whatever the message size
TRAVERSAL_WORDS_PER_WORD = 8  # budget per word of input: decoders may read a field twice
TRAVERSAL_FLOOR_WORDS = 1024  # budget of tiny messages
NESTING_LIMIT = 64

_U64 = struct.Struct("<Q")


def frame_length(
    buf: bytes | bytearray | memoryview, max_size: int = MAX_MESSAGE_SIZE
) -> int | None:
    """Length of the framed message at the start of ``buf``; None if more bytes are needed."""
    if len(buf) < 4:
        return None
    nseg = int.from_bytes(buf[0:4], "little") + 1
    if nseg > MAX_SEGMENTS:
        raise DecodeError(f"too many segments: {nseg}")
    header = 4 + 4 * nseg
    header += header % 8
    if header > max_size:
        raise DecodeError("message too large")
    if len(buf) < 4 + 4 * nseg:
        return None
    words = sum(int.from_bytes(buf[4 + 4 * i : 8 + 4 * i], "little") for i in range(nseg))
    total = header + 8 * words
    if total > max_size:
        raise DecodeError(f"message too large: {total} bytes > {max_size}")
    return total


def traversal_limit(message_words: int, cap: int | None = None) -> int:
    """The traversal budget of a message of ``message_words`` words."""
    limit = max(TRAVERSAL_FLOOR_WORDS, TRAVERSAL_WORDS_PER_WORD * message_words)
    return min(limit, TRAVERSAL_LIMIT_WORDS if cap is None else cap)


@dataclass(frozen=True)
class ListInfo:
    """A decoded list pointer: where its elements are and how big each one is."""

    seg: int
    start: int  # byte offset of element 0
    count: int
    elem_size: int  # pointer element-size code 0..7
    step_bits: int  # bits per element
    data_bytes: int  # composite / struct view: data section bytes per element
    ptr_count: int  # composite / struct view: pointers per element


class MessageReader:
    """Segments of one message plus the shared traversal budget."""

    def __init__(
        self,
        segments: list[bytes],
        *,
        traversal_limit_words: int | None = None,
        nesting_limit: int = NESTING_LIMIT,
    ) -> None:
        self.segments = segments
        self.limit = traversal_limit(sum(len(seg) for seg in segments) // 8,
                                     traversal_limit_words)
        self.budget = self.limit
        self.nesting_limit = nesting_limit

    @property
    def traversed(self) -> int:
        """Words charged so far (the decoding work done on this message)."""
        return self.limit - self.budget

    def charge(self, words: int) -> None:
        """Spend budget before doing work proportional to ``words`` (at least 1)."""
        self.budget -= max(words, 1)
        if self.budget < 0:
            self.budget = 0
            raise DecodeError(f"traversal limit exceeded: a message of "
                              f"{sum(len(seg) for seg in self.segments)} bytes may not "
                              f"reference more than {self.limit} words of objects")

    def word(self, seg: int, index: int) -> int:
        data = self.segments[seg]
        if index < 0 or (index + 1) * 8 > len(data):
            raise DecodeError("pointer out of segment bounds")
        return int(_U64.unpack_from(data, index * 8)[0])

    def check_range(self, seg: int, start_word: int, words: int) -> None:
        if start_word < 0 or (start_word + words) * 8 > len(self.segments[seg]):
            raise DecodeError("object out of segment bounds")

    def root(self) -> StructReader:
        if not self.segments or len(self.segments[0]) < 8:
            raise DecodeError("empty message")
        r = self.read_struct_ptr(0, 0, 0)
        if r is None:
            return StructReader(self, 0, 0, 0, 0, 0, 0)
        return r

    def resolve(self, seg: int, index: int) -> tuple[int, int, int]:
        """Follow far pointers: returns (segment, pointer word with kind/size, content word)."""
        w = self.word(seg, index)
        if w & 3 != 2:
            off = (w & 0xFFFFFFFF) >> 2
            if off >= 1 << 29:
                off -= 1 << 30
            return seg, w, index + 1 + off
        pad_seg = w >> 32
        pad_off = (w & 0xFFFFFFFF) >> 3
        if pad_seg >= len(self.segments):
            raise DecodeError("far pointer to unknown segment")
        self.charge(1)
        if not (w >> 2) & 1:
            pad = self.word(pad_seg, pad_off)
            if pad & 3 == 2:
                raise DecodeError("far pointer landing pad is another far pointer")
            off = (pad & 0xFFFFFFFF) >> 2
            if off >= 1 << 29:
                off -= 1 << 30
            return pad_seg, pad, pad_off + 1 + off
        far = self.word(pad_seg, pad_off)
        tag = self.word(pad_seg, pad_off + 1)
        if far & 7 != 2:
            raise DecodeError("double-far landing pad is not a single far pointer")
        content_seg = far >> 32
        if content_seg >= len(self.segments):
            raise DecodeError("far pointer to unknown segment")
        if tag & 3 == 2:
            raise DecodeError("double-far tag is a far pointer")
        return content_seg, tag, (far & 0xFFFFFFFF) >> 3

    def read_struct_ptr(self, seg: int, index: int, depth: int) -> StructReader | None:
        if depth > self.nesting_limit:
            raise DecodeError("nesting limit exceeded")
        if self.word(seg, index) == 0:
            return None
        tseg, w, target = self.resolve(seg, index)
        if w & 3 != 0:
            raise DecodeError("expected a struct pointer")
        dw = (w >> 32) & 0xFFFF
        pc = w >> 48
        self.check_range(tseg, target, dw + pc)
        self.charge(dw + pc)
        return StructReader(self, tseg, target * 8, dw * 8, target + dw, pc, depth)

    def read_list_ptr(self, seg: int, index: int, depth: int) -> ListInfo | None:
        if depth > self.nesting_limit:
            raise DecodeError("nesting limit exceeded")
        if self.word(seg, index) == 0:
            return None
        tseg, w, target = self.resolve(seg, index)
        if w & 3 != 1:
            raise DecodeError("expected a list pointer")
        size = (w >> 32) & 7
        count = w >> 35
        if size == 7:
            tag = self.word(tseg, target)
            if tag & 3 != 0:
                raise DecodeError("composite list tag is not a struct")
            n = (tag & 0xFFFFFFFF) >> 2
            dw = (tag >> 32) & 0xFFFF
            pc = tag >> 48
            if n * (dw + pc) > count:
                raise DecodeError("composite list overruns its word count")
            self.check_range(tseg, target + 1, count)
            self.charge(max(count, n))
            return ListInfo(tseg, (target + 1) * 8, n, 7, (dw + pc) * 64, dw * 8, pc)
        bits = (0, 1, 8, 16, 32, 64, 64)[size]
        words = (count * bits + 63) // 64
        self.check_range(tseg, target, words)
        self.charge(max(words, count if bits == 0 else 0))
        if size == 6:
            return ListInfo(tseg, target * 8, count, 6, 64, 0, 1)
        return ListInfo(tseg, target * 8, count, size, bits, bits // 8, 0)


class StructReader:
    """View of one struct; reads past the data/pointer sections return defaults."""

    __slots__ = ("data_bytes", "data_start", "depth", "msg", "ptr_count", "ptr_start", "seg")

    def __init__(
        self,
        msg: MessageReader,
        seg: int,
        data_start: int,
        data_bytes: int,
        ptr_start: int,
        ptr_count: int,
        depth: int,
    ) -> None:
        self.msg = msg
        self.seg = seg
        self.data_start = data_start
        self.data_bytes = data_bytes
        self.ptr_start = ptr_start
        self.ptr_count = ptr_count
        self.depth = depth

    def _uint(self, byte_off: int, size: int) -> int:
        if byte_off + size > self.data_bytes:
            return 0
        pos = self.data_start + byte_off
        return int.from_bytes(self.msg.segments[self.seg][pos : pos + size], "little")

    def u8(self, off: int) -> int:
        return self._uint(off, 1)

    def u16(self, off: int, default: int = 0) -> int:
        return self._uint(off * 2, 2) ^ default

    def u32(self, off: int) -> int:
        return self._uint(off * 4, 4)

    def u64(self, off: int) -> int:
        return self._uint(off * 8, 8)

    def i32(self, off: int) -> int:
        v = self.u32(off)
        return v - (1 << 32) if v >= 1 << 31 else v

    def i64(self, off: int) -> int:
        v = self.u64(off)
        return v - (1 << 64) if v >= 1 << 63 else v

    def bit(self, bit: int, default: bool = False) -> bool:
        return bool((self._uint(bit // 8, 1) >> (bit % 8)) & 1) ^ default

    def has(self, i: int) -> bool:
        return i < self.ptr_count and self.msg.word(self.seg, self.ptr_start + i) != 0

    def struct(self, i: int) -> StructReader | None:
        if i >= self.ptr_count:
            return None
        return self.msg.read_struct_ptr(self.seg, self.ptr_start + i, self.depth + 1)

    def list_info(self, i: int) -> ListInfo | None:
        if i >= self.ptr_count:
            return None
        return self.msg.read_list_ptr(self.seg, self.ptr_start + i, self.depth + 1)

    def capability(self, i: int) -> int | None:
        """Cap-table index if pointer ``i`` is a capability pointer, else None."""
        if i >= self.ptr_count:
            return None
        w = self.msg.word(self.seg, self.ptr_start + i)
        if w & 0xFFFFFFFF == 3:
            return w >> 32
        return None

    def data(self, i: int) -> bytes:
        info = self.list_info(i)
        if info is None:
            return b""
        if info.elem_size != 2:
            raise DecodeError("expected a byte list")
        return bytes(self.msg.segments[info.seg][info.start : info.start + info.count])

    def text(self, i: int) -> str:
        raw = self.data(i)
        if raw.endswith(b"\x00"):
            raw = raw[:-1]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError("text is not UTF-8") from exc

    def text_raw(self, i: int) -> str:
        """Text whose bytes need not be UTF-8 (HTTP field values: cloudflared passes Go's raw
        strings); bytes that are not UTF-8 become surrogate escapes, and `set_text` writes
        them back unchanged."""
        raw = self.data(i)
        if raw.endswith(b"\x00"):
            raw = raw[:-1]
        return raw.decode("utf-8", "surrogateescape")

    def structs(self, i: int) -> list[StructReader]:
        info = self.list_info(i)
        return [] if info is None else list_structs(self.msg, info, self.depth + 1)

    def texts(self, i: int) -> list[str]:
        info = self.list_info(i)
        if info is None:
            return []
        if info.elem_size != 6:
            raise DecodeError("expected a pointer list")
        holder = StructReader(self.msg, info.seg, info.start, 0, info.start // 8, info.count,
                              self.depth + 1)
        return [holder.text(k) for k in range(info.count)]


def list_structs(msg: MessageReader, info: ListInfo, depth: int) -> list[StructReader]:
    """Elements of a list viewed as structs (composite, or upgraded primitive list)."""
    if info.elem_size == 1:
        raise DecodeError("bit list cannot be read as a struct list")
    if info.elem_size != 7:
        msg.charge(info.count)  # a byte list viewed as structs: one object per byte
    step = info.step_bits // 8
    out = []
    for k in range(info.count):
        start = info.start + k * step
        ptr_start = (start + info.data_bytes) // 8
        out.append(StructReader(msg, info.seg, start, info.data_bytes, ptr_start, info.ptr_count,
                                depth))
    return out


def read_message(
    buf: bytes | bytearray | memoryview,
    *,
    max_size: int = MAX_MESSAGE_SIZE,
    traversal_limit_words: int | None = None,
) -> tuple[MessageReader, int]:
    """Parse one framed message from the start of ``buf``: (reader, bytes consumed)."""
    total = frame_length(buf, max_size)
    if total is None or total > len(buf):
        raise DecodeError("truncated message")
    nseg = int.from_bytes(buf[0:4], "little") + 1
    pos = 4 + 4 * nseg
    pos += pos % 8
    segments = []
    for i in range(nseg):
        words = int.from_bytes(buf[4 + 4 * i : 8 + 4 * i], "little")
        segments.append(bytes(buf[pos : pos + 8 * words]))
        pos += 8 * words
    return MessageReader(segments, traversal_limit_words=traversal_limit_words), total
