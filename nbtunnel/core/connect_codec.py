"""One-pass codec for the per-request Cap'n Proto heads (ConnectRequest / ConnectResponse).

Every proxied request encodes and decodes one of each; through the generic builder and
reader that cost about a thousand Python calls per request. Both messages have one shape: a
root struct with a text in pointer 0 and a list of (key, value) text pairs in pointer 1.

- :func:`encode_head` lays that shape out directly and produces exactly the bytes of the
  generic builder (and so of go-capnp): root struct, the first text, the list's tag and
  elements, then each entry's key and value in order; empty texts are null pointers.
- :func:`decode_head` reads only the canonical shape (one segment, no far pointers, entries
  of 0 data words and 2 pointers, texts that together fit in the segment) and returns
  ``None`` for anything else, so the caller falls back to the generic reader, which decides
  (a result or a DecodeError). It never raises: every index is checked against the segment,
  every element and text byte read lies inside it, and the texts read may not add up to more
  words than the segment has, so its work is bounded by the message size.
"""

from __future__ import annotations

import struct

_Q = struct.Struct("<Q")
_ONE_SEGMENT = b"\x00\x00\x00\x00"  # framing: segment count - 1
_ENTRY_SHAPE = 2 << 48  # composite-list tag: 0 data words, 2 pointers
_TEXT = 1 | 2 << 32  # list pointer, element size 2 (bytes)


_PAD = [bytes(8 - i) for i in range(8)]  # NUL + zero padding after i bytes in the last word


def encode_head(data: bytes, first: str, metadata: list[tuple[str, str]],
                with_list: bool) -> bytes:
    """Framed message: root struct of ``len(data) // 8`` data words (``data``) and 2 pointers,
    text ``first`` in pointer 0, the ``metadata`` list in pointer 1 (null unless
    ``with_list``)."""
    dw = len(data) // 8
    slot = 1 + dw  # word index of the root's pointer 0
    pos = slot + 2  # next free word
    p0 = 0
    head = b""
    if first:
        raw = first.encode()
        size = len(raw)
        p0 = (pos - slot - 1) << 2 | _TEXT | (size + 1) << 35
        head = raw + _PAD[size & 7]
        pos += (size >> 3) + 1
    if not with_list:
        body = _Q.pack(dw << 32 | 2 << 48) + data + _Q.pack(p0) + bytes(8) + head
        return _ONE_SEGMENT + (len(body) >> 3).to_bytes(4, "little") + body
    n = len(metadata)
    tag = pos
    p1 = (tag - slot - 2) << 2 | 1 | 7 << 32 | (2 * n) << 35
    pos = tag + 1 + 2 * n
    ptrs: list[int] = []
    blobs: list[bytes] = []
    at = tag + 1  # word index of the pointer being written
    for pair in metadata:
        for text in pair:
            if text:
                raw = text.encode("utf-8", "surrogateescape")  # raw field bytes kept
                size = len(raw)
                ptrs.append((pos - at - 1) << 2 | _TEXT | (size + 1) << 35)
                blobs += (raw, _PAD[size & 7])
                pos += (size >> 3) + 1
            else:
                ptrs.append(0)
            at += 1
    body = b"".join((
        _Q.pack(dw << 32 | 2 << 48), data, _Q.pack(p0), _Q.pack(p1), head,
        _Q.pack(n << 2 | _ENTRY_SHAPE), struct.pack(f"<{2 * n}Q", *ptrs), *blobs,
    ))
    return _ONE_SEGMENT + (len(body) >> 3).to_bytes(4, "little") + body


def decode_head(
    message: bytes, min_data_words: int
) -> tuple[int, str, list[tuple[str, str]]] | None:
    """(first u16 of the data section, text 0, metadata) of a framed message in the canonical
    shape, else None (use the generic reader). ``message`` is exactly one framed message."""
    if len(message) < 16 or message[:4] != _ONE_SEGMENT:
        return None
    nwords = int.from_bytes(message[4:8], "little")
    if len(message) != 8 + 8 * nwords:
        return None
    root = _Q.unpack_from(message, 8)[0]  # segment word i is at byte 8 + 8 * i
    dw = (root >> 32) & 0xFFFF
    if root & 3 or dw < min_data_words or root >> 48 < 2:
        return None
    start = _offset(root) + 1
    slot = start + dw
    if start < 0 or slot + (root >> 48) > nwords:
        return None
    kind = int.from_bytes(message[8 + start * 8 : 10 + start * 8], "little") if dw else 0
    p0, w = struct.unpack_from("<QQ", message, 8 + 8 * slot)
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
    ptrs = struct.unpack_from(f"<{2 * n}Q", message, 16 + 8 * tag_at)
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
