"""One-pass codec for the per-request Cap'n Proto heads (ConnectRequest / ConnectResponse).

Every proxied request encodes and decodes one of each; through the generic builder and
reader that cost about a thousand Python calls per request. Both messages have one shape: a
root struct with a text in pointer 0 and a list of (key, value) text pairs in pointer 1.

- :func:`encode_head` lays that shape out directly and produces exactly the bytes of the
  generic builder (and so of go-capnp): root struct, the first text, the list's tag and
  elements, then each entry's key and value in order; empty texts are null pointers.
- :func:`decode_head` reads that exact layout (what go-capnp and :func:`encode_head` write).
  Anything else goes to the general one-pass reader (one segment, no far pointers, entries
  of 0 data words and 2 pointers, texts that together fit in the segment), which returns
  ``None`` for what it cannot read, so the caller falls back to the generic reader, which
  decides (a result or a DecodeError). Neither raises: every index is checked against the
  segment, every element and text byte read lies inside it, and the texts read may not add
  up to more words than the segment has, so the work is bounded by the message size.

Heads repeat their shape: the same fields with values of the same sizes (the edge's
forwarding headers, an origin's response fields). The list's pointer words depend on the text
sizes only, so both directions keep a bounded cache keyed by them: the encoder maps the
sizes to the tag and pointer words (bytes, ready to copy) and to a ``struct`` that pads and
lays out the texts in one call; the decoder reads a layout's first head pointer by pointer
(each pointer must be the one the encoder writes for a text that follows the previous one)
and from the second on maps the pointer words to a ``struct`` that cuts the texts out in one
call and one that checks their NULs. Per head that leaves a handful of C calls instead of a
dozen Python operations per text.
"""
from __future__ import annotations

import operator
import struct
from itertools import chain

_Q = struct.Struct("<Q")
_QQ = struct.Struct("<QQ")
_ONE_SEGMENT = b"\x00\x00\x00\x00"  # framing: segment count - 1
_ENTRY_SHAPE = 2 << 48  # composite-list tag: 0 data words, 2 pointers
_TEXT = 1 | 2 << 32  # list pointer, element size 2 (bytes)
_LOW = (1 << 35) - 1  # a list pointer without its element count
_ROOT_PTRS = 2 << 48  # a root struct with 2 pointers

_WORDS: dict[int, struct.Struct] = {}


def _words(n: int) -> struct.Struct:
    """The struct of ``n`` little-endian words (kept for the usual list sizes)."""
    layout = _WORDS.get(n)
    if layout is None:
        layout = struct.Struct(f"<{n}Q")
        if n <= 128:
            _WORDS[n] = layout
    return layout


_encode = operator.methodcaller("encode", "utf-8", "surrogateescape")  # raw field bytes kept
_Shape = tuple[bytes, struct.Struct]  # a list's tag and pointers, the struct of its texts
_SHAPES: dict[tuple[int, ...], _Shape] = {}  # by the sizes of the texts: heads recur
_MAX_SHAPES = 128
_MAX_CACHED_TEXTS = 128  # heads with more texts (64 fields) are laid out afresh each time:
# at most ~6 KiB per cached layout, so under 1 MiB per cache whatever the peers send


def _shape(sizes: tuple[int, ...]) -> _Shape:
    """The list of ``len(sizes) // 2`` entries whose texts have these sizes: its tag and
    pointer words, and the struct that lays out the texts (each NUL-terminated and padded to
    a word; an empty text is a null pointer and takes no room)."""
    n = len(sizes)
    ptrs = []
    fields = ["<"]
    off = n - 1  # from the pointer being written (+1) to the next free word
    for size in sizes:
        if size:
            words = (size >> 3) + 1
            ptrs.append(off << 2 | _TEXT | (size + 1) << 35)
            fields.append(f"{8 * words}s")  # struct pads with NULs
            off += words - 1
        else:
            ptrs.append(0)
            fields.append("0s")
            off -= 1
    shape = (_Q.pack(n << 1 | _ENTRY_SHAPE) + _words(n).pack(*ptrs),
             struct.Struct("".join(fields)))
    if n <= _MAX_CACHED_TEXTS:
        if len(_SHAPES) >= _MAX_SHAPES:
            del _SHAPES[next(iter(_SHAPES))]
        _SHAPES[sizes] = shape
    return shape


def encode_head(data: bytes, first: str, metadata: list[tuple[str, str]],
                with_list: bool) -> bytes:
    """Framed message: root struct of ``len(data) // 8`` data words (``data``) and 2 pointers,
    text ``first`` in pointer 0, the ``metadata`` list in pointer 1 (null unless
    ``with_list``)."""
    root = _Q.pack((len(data) >> 3) << 32 | _ROOT_PTRS)
    p0 = 0
    head = b""
    words0 = 0
    if first:
        raw = first.encode()
        size = len(raw)
        words0 = (size >> 3) + 1
        p0 = 4 | _TEXT | (size + 1) << 35  # offset 1: the text follows pointer 1
        head = raw + bytes(8 * words0 - size)
    if not with_list:
        body = b"".join((root, data, _QQ.pack(p0, 0), head))
        return _ONE_SEGMENT + (len(body) >> 3).to_bytes(4, "little") + body
    raws = list(map(_encode, chain.from_iterable(metadata)))
    sizes = tuple(map(len, raws))
    tag_ptrs, texts = _SHAPES.get(sizes) or _shape(sizes)
    # the list's tag follows the first text: pointer 1's offset is that text's size
    p1 = words0 << 2 | 1 | 7 << 32 | len(raws) << 35
    body = b"".join((root, data, _QQ.pack(p0, p1), head, tag_ptrs, texts.pack(*raws)))
    return _ONE_SEGMENT + (len(body) >> 3).to_bytes(4, "little") + body


def decode_head(
    message: bytes, min_data_words: int
) -> tuple[int, str, list[tuple[str, str]]] | None:
    """(first u16 of the data section, text 0, metadata) of a framed message in the canonical
    shape, else None (use the generic reader). ``message`` is exactly one framed message."""
    size = len(message)
    if size < 16 or message[:4] != _ONE_SEGMENT or size != 8 + 8 * int.from_bytes(
            message[4:8], "little"):
        return None
    root = _Q.unpack_from(message, 8)[0]  # segment word i is at byte 8 + 8 * i
    dw = (root >> 32) & 0xFFFF
    if root & 0xFFFFFFFF or root >> 48 != 2 or dw < min_data_words:
        return _decode_general(message, min_data_words)
    slot = 16 + 8 * dw  # byte offset of pointer 0
    try:
        p0, p1 = _QQ.unpack_from(message, slot)
        at = slot + 16  # byte offset where the next object must start
        if p0:
            count = p0 >> 35
            end = at + count - 1
            if p0 & _LOW != 4 | _TEXT or not count or message[end]:
                return _decode_general(message, min_data_words)
            first = message[at:end].decode()
            at += (count + 7) & -8
        else:
            first = ""
        if not p1:
            if at != size:
                return _decode_general(message, min_data_words)
            return int.from_bytes(message[16:18], "little") if dw else 0, first, []
        count = p1 >> 35  # pointer words in the list: 2 per entry
        if p1 & _LOW != (at - slot - 16) >> 1 | 1 | 7 << 32 or count & 1 or _Q.unpack_from(
                message, at)[0] != count << 1 | _ENTRY_SHAPE:
            return _decode_general(message, min_data_words)
        block = message[at + 8 : at + 8 + 8 * count]
        at += 8 + 8 * count
        layout = _LAYOUTS.get(block)
        if layout is None:
            key = hash(block)
            if key not in _SEEN or count > _MAX_CACHED_TEXTS:
                # a layout seen once is read pointer by pointer (building a struct pays off
                # from the second head of that layout); bounded: the peer chooses layouts
                if len(_SEEN) >= _MAX_SEEN:
                    _SEEN.clear()
                _SEEN.add(key)
                texts = _texts_in_order(message, at, block, count)
                if texts is None:
                    return _decode_general(message, min_data_words)
                pairs = iter(texts)
                return (int.from_bytes(message[16:18], "little") if dw else 0, first,
                        list(zip(pairs, pairs, strict=False)))
            layout = _layout(block, count)
            if layout is None:
                return _decode_general(message, min_data_words)
            if len(_LAYOUTS) >= _MAX_LAYOUTS:
                del _LAYOUTS[next(iter(_LAYOUTS))]
            _LAYOUTS[block] = layout
        texts_of, nuls_of, nuls, length = layout
        # every text ends in its NUL (else the generic reader, which keeps a last byte that
        # is not one, decides); the texts are cut without it
        if at + length != size or nuls_of.unpack_from(message, at) != nuls:
            return _decode_general(message, min_data_words)
        texts = list(map(bytes.decode, texts_of.unpack_from(message, at)))
    except (IndexError, UnicodeDecodeError, struct.error):
        return _decode_general(message, min_data_words)
    pairs = iter(texts)
    return (int.from_bytes(message[16:18], "little") if dw else 0, first,
            list(zip(pairs, pairs, strict=False)))  # an even count: checked above


_Layout = tuple[struct.Struct, struct.Struct, tuple[int, ...], int]
"""The texts after a pointer list (without their NULs), their NULs, as many zeros, and the
texts' padded length."""
_LAYOUTS: dict[bytes, _Layout] = {}  # by the list's pointer words: one per set of text sizes
_MAX_LAYOUTS = 128


_SEEN: set[int] = set()  # hashes of layouts read once
_MAX_SEEN = 1024


def _texts_in_order(message: bytes, at: int, block: bytes, count: int) -> list[str] | None:
    """The texts of ``count`` pointer words (``block``) when each one follows the previous
    one's padded end from byte ``at`` to the message's end and ends in its NUL, else None."""
    expect = (count - 1) << 2 | _TEXT  # the next text pointer's low bits
    texts: list[str] = []
    append = texts.append
    for w in _words(count).unpack(block):
        if w:
            size = w >> 35
            end = at + size - 1
            if w & _LOW != expect or not size or message[end]:
                return None
            append(message[at:end].decode())
            size = (size + 7) & -8
            at += size
            expect += (size >> 1) - 4
        else:
            append("")
            expect -= 4
    return texts if at == len(message) else None


def _layout(block: bytes, count: int) -> _Layout | None:
    """Where the texts of ``count`` pointer words (``block``) lie when each one follows the
    previous one's padded end, right after the pointers (None if they do not)."""
    texts = ["<"]
    nuls = ["<"]
    expect = (count - 1) << 2 | _TEXT  # the next text pointer's low bits
    length = 0
    n = 0
    for w in _words(count).unpack(block):
        if w:
            size = w >> 35
            if w & _LOW != expect or not size:
                return None
            padded = (size + 7) & -8
            texts.append(f"{size - 1}s{padded - size + 1}x")
            nuls.append(f"{size - 1}xB{padded - size}x")
            n += 1
            length += padded
            expect += (padded >> 1) - 4
        else:
            texts.append("0s")
            expect -= 4
    return (struct.Struct("".join(texts)), struct.Struct("".join(nuls)), (0,) * n, length)


def _decode_general(
    message: bytes, min_data_words: int
) -> tuple[int, str, list[tuple[str, str]]] | None:
    """:func:`decode_head` for any layout of the shape (texts anywhere in the segment)."""
    nwords = len(message) // 8 - 1
    root = _Q.unpack_from(message, 8)[0]
    dw = (root >> 32) & 0xFFFF
    if root & 3 or dw < min_data_words or root >> 48 < 2:
        return None
    start = _offset(root) + 1
    slot = start + dw
    if start < 0 or slot + (root >> 48) > nwords:
        return None
    kind = int.from_bytes(message[8 + start * 8 : 10 + start * 8], "little") if dw else 0
    p0, w = _QQ.unpack_from(message, 8 + 8 * slot)
    texts = _texts([p0], slot, message, nwords, nwords)
    if texts is None:
        return None
    if w == 0:
        return kind, texts[0], []
    if w & 3 != 1 or (w >> 32) & 7 != 7:
        return None
    tag_at = slot + 2 + _offset(w)
    count = w >> 35
    if tag_at < 0 or tag_at + 1 + count > nwords:
        return None
    tag = _Q.unpack_from(message, 8 + 8 * tag_at)[0]
    n = (tag & 0xFFFFFFFF) >> 2
    if tag & 3 or tag >> 32 != _ENTRY_SHAPE >> 32 or 2 * n > count:
        return None
    ptrs = _words(2 * n).unpack_from(message, 16 + 8 * tag_at)
    used = (((p0 >> 35) + 7) >> 3 or 1) if p0 else 0  # what the first text was charged
    entries = _texts(ptrs, tag_at + 1, message, nwords, nwords - used)
    if entries is None:
        return None
    return kind, texts[0], list(zip(entries[::2], entries[1::2], strict=True))


def _offset(w: int) -> int:
    off = (w & 0xFFFFFFFF) >> 2
    return off - (1 << 30) if off >= 1 << 29 else off


def _texts(ptrs: list[int] | tuple[int, ...], at: int, message: bytes, nwords: int,
           budget: int) -> list[str] | None:
    """The texts that consecutive pointer words (the first at word ``at``) point to; None if
    one is not a canonical in-segment text or they add up to more than ``budget`` words."""
    out: list[str] = []
    for w in ptrs:
        if w == 0:
            out.append("")
        else:
            if w & 0x700000003 != 0x200000001:  # a list pointer of bytes
                return None
            count = w >> 35
            off = (w & 0xFFFFFFFF) >> 2
            if off >= 1 << 29:
                off -= 1 << 30
            target = at + 1 + off
            words = (count + 7) >> 3
            budget -= words or 1
            if target < 0 or target + words > nwords or budget < 0:
                return None
            begin = 8 + 8 * target
            end = begin + count
            if count and message[end - 1] == 0:
                end -= 1
            try:
                out.append(message[begin:end].decode())
            except UnicodeDecodeError:
                return None
        at += 1
    return out
