"""HPACK (RFC 7541) for the tunnel's HTTP/2 connections: a full decoder, a stateless encoder.

The decoder takes everything a conforming peer may send (indexed fields, literals with and
without indexing, never-indexed literals, Huffman strings, dynamic table size updates within
the limit we announced) and is bounded by its input: integers stop at 2^28, a string never
reaches past its block, the decoded list is not kept past ``max_list_size`` (sizes counted as
RFC 7541 §4.1 counts them).

The encoder never inserts into the peer's dynamic table: every field is a static-table index
or a literal whose bytes depend only on the field, so the encoding of a repeated field is
looked up, not recomputed (a request or response head is then a few dict hits and one join).
It announces a table size of 0 in its first block and after each change of the peer's
SETTINGS_HEADER_TABLE_SIZE, which keeps any decoder's view of our (empty) table right. Literals
are not Huffman-coded: a few more bytes on the wire for much less CPU.

Fields are ``str`` pairs holding the wire bytes: names and values are decoded as UTF-8 with
surrogate escapes (a visitor's raw Latin-1 bytes survive) and encoded back the same way.
"""

from __future__ import annotations

from collections import deque

from hpack.exceptions import HPACKDecodingError
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

Field = tuple[str, str]

STATIC: tuple[tuple[str, str, int, int], ...] = tuple(
    (n.decode("ascii"), v.decode("ascii"), len(n), len(v)) for n, v in HeaderTable.STATIC_TABLE)
"""RFC 7541 Appendix A, index 1 first: (name, value, name octets, value octets)."""
_STATIC_LEN = len(STATIC)
_STATIC_FIELD = {(n, v): i + 1 for i, (n, v, _, _) in reversed(list(enumerate(STATIC)))}
_STATIC_NAME = {n: i + 1 for i, (n, _, _, _) in reversed(list(enumerate(STATIC)))}

ENTRY_OVERHEAD = 32
_HUFFMAN_CACHED_MAX = 64
"""Huffman strings up to this many octets keep their decoding (per connection, 256 at most)."""


class HpackError(Exception):
    """A header block that cannot be decoded: COMPRESSION_ERROR for the connection."""


class OversizedError(HpackError):
    """The decoded header list is larger than we accept; the block was decoded to its end
    (the dynamic table is in step with the peer's), so this is one stream's problem."""


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


class Decoder:
    """One connection's HPACK decoding context (its dynamic table)."""

    def __init__(self, max_table_size: int = 4096, max_list_size: int = 65536) -> None:
        self.max_allowed = max_table_size
        """Our SETTINGS_HEADER_TABLE_SIZE: the largest size update the peer may send."""
        self.max_size = max_table_size
        self.max_list_size = max_list_size
        self.size = 0
        self._table: deque[tuple[str, str, int, int]] = deque()  # newest first
        self._huffman: dict[bytes, bytes] = {}

    def decode(self, block: bytes) -> list[Field]:
        out: list[Field] = []
        n = len(block)
        i = 0
        total = 0
        limit = self.max_list_size
        fields = False
        static = STATIC
        while i < n:
            b = block[i]
            if b & 0x80:  # indexed field
                idx = b & 0x7F
                if idx < 0x7F:
                    i += 1
                else:
                    idx, i = _int(block, i, 7)
                name, value, nl, vl = (static[idx - 1] if 0 < idx <= _STATIC_LEN
                                       else self._entry(idx))
            elif b & 0x40:  # literal with incremental indexing
                idx, i = _int(block, i, 6)
                if idx:
                    name, _, nl, _ = self._entry(idx)
                else:
                    name, nl, i = self._string(block, i)
                value, vl, i = self._string(block, i)
                self._add(name, value, nl, vl)
            elif b & 0x20:  # dynamic table size update: only before the first field
                if fields:
                    raise HpackError("a table size update after a field")
                size, i = _int(block, i, 5)
                if size > self.max_allowed:
                    raise HpackError(f"table size update to {size} above {self.max_allowed}")
                self.max_size = size
                self._evict()
                continue
            else:  # literal without indexing (0x00) or never indexed (0x10)
                idx = b & 0x0F
                if idx < 0x0F:
                    i += 1
                elif i + 1 < n and block[i + 1] < 0x80:  # a two-byte index (15..142)
                    idx = 0x0F + block[i + 1]
                    i += 2
                else:
                    idx, i = _int(block, i, 4)
                if idx:
                    name, _, nl, _ = (static[idx - 1] if idx <= _STATIC_LEN
                                      else self._entry(idx))
                else:
                    name, nl, i = self._string(block, i)
                if i < n and block[i] < 0x7F:  # a raw value shorter than 127 bytes
                    end = i + 1 + block[i]
                    if end > n:
                        raise HpackError("a string runs past the header block")
                    value = block[i + 1:end].decode("utf-8", "surrogateescape")
                    vl = end - i - 1
                    i = end
                else:
                    value, vl, i = self._string(block, i)
            fields = True
            total += nl + vl + ENTRY_OVERHEAD
            if total <= limit:
                out.append((name, value))
        if total > limit:  # raised at the end: the table has followed the whole block
            raise OversizedError(f"header list larger than {limit} bytes")
        return out

    def _entry(self, idx: int) -> tuple[str, str, int, int]:
        if 0 < idx <= _STATIC_LEN:
            return STATIC[idx - 1]
        pos = idx - _STATIC_LEN - 1
        if idx == 0 or pos >= len(self._table):
            raise HpackError(f"header table index {idx} out of range")
        return self._table[pos]

    def _string(self, block: bytes, i: int) -> tuple[str, int, int]:
        """A string literal at ``i``: (text, octets as sent for the table size, next index)."""
        if i >= len(block):
            raise HpackError("a field ends before its string")
        huffman = block[i] & 0x80
        length, i = _int(block, i, 7)
        end = i + length
        if end > len(block):
            raise HpackError("a string runs past the header block")
        raw = block[i:end]
        if huffman:
            cached = self._huffman.get(raw)
            if cached is None:
                try:
                    cached = decode_huffman(raw)
                except HPACKDecodingError as exc:
                    raise HpackError(f"bad Huffman string: {exc}") from exc
                if len(raw) <= _HUFFMAN_CACHED_MAX:  # bounded: 256 short strings
                    if len(self._huffman) >= 256:
                        self._huffman.clear()
                    self._huffman[raw] = cached
            raw = cached
        return _text(raw), len(raw), end

    def _add(self, name: str, value: str, nl: int, vl: int) -> None:
        size = nl + vl + ENTRY_OVERHEAD
        if size > self.max_size:  # RFC 7541 §4.4: the table empties, nothing is added
            self._table.clear()
            self.size = 0
            return
        self._table.appendleft((name, value, nl, vl))
        self.size += size
        self._evict()

    def _evict(self) -> None:
        table = self._table
        while self.size > self.max_size:
            _, _, nl, vl = table.pop()
            self.size -= nl + vl + ENTRY_OVERHEAD


def _int(block: bytes, i: int, prefix: int) -> tuple[int, int]:
    """RFC 7541 §5.1 integer at ``i`` with a ``prefix``-bit prefix: (value, next index)."""
    mask = (1 << prefix) - 1
    value = block[i] & mask
    i += 1
    if value < mask:
        return value, i
    shift = 0
    n = len(block)
    while True:
        if i >= n:
            raise HpackError("an integer runs past the header block")
        b = block[i]
        i += 1
        value += (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 28:
            raise HpackError("an integer larger than 2^28")


def encode_int(value: int, prefix: int, first: int) -> bytes:
    """RFC 7541 §5.1: ``value`` with a ``prefix``-bit prefix, ``first`` holding the flag bits."""
    mask = (1 << prefix) - 1
    if value < mask:
        return bytes((first | value,))
    out = bytearray((first | mask,))
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(raw: bytes) -> bytes:
    return encode_int(len(raw), 7, 0) + raw


def encode_field(name: str, value: str, *, never_indexed: bool = False) -> bytes:
    """One field's representation, the same whatever came before it."""
    if not never_indexed:
        idx = _STATIC_FIELD.get((name, value))
        if idx:
            return encode_int(idx, 7, 0x80)
    first = 0x10 if never_indexed else 0x00
    vb = value.encode("utf-8", "surrogateescape")
    idx = _STATIC_NAME.get(name)
    if idx:
        return encode_int(idx, 4, first) + _literal(vb)
    return bytes((first,)) + _literal(name.encode("utf-8", "surrogateescape")) + _literal(vb)


NEVER_INDEXED = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
"""Fields sent as never-indexed literals (a hop that re-encodes them keeps them out of its
table too) and never kept in the encoding cache: credentials are not remembered."""
UNCACHED = NEVER_INDEXED | {"cf-ray"}
"""Also never cached: ``cf-ray`` differs in every request and would only churn the cache."""

_CACHE: dict[Field, bytes] = {}
"""Encoded fields, shared by every connection (the encoding depends on the field alone)."""
_CACHE_MAX = 4096
_CACHE_FIELD_MAX = 512
"""Fields longer than this (name + value) are encoded each time: the cache stays within
4096 x 512 characters whatever visitors send."""


class Encoder:
    """One connection's encoding side: only the table size it owes the peer."""

    def __init__(self) -> None:
        self._size_update = True  # our table is 0 bytes: say so in the first block

    def table_size_changed(self) -> None:
        """The peer changed SETTINGS_HEADER_TABLE_SIZE: announce our size again."""
        self._size_update = True

    def encode(self, fields: list[Field]) -> bytes:
        parts = []
        if self._size_update:
            self._size_update = False
            parts.append(b"\x20")
        cache = _CACHE
        for field in fields:
            enc = cache.get(field)
            if enc is None:
                name, value = field
                enc = encode_field(name, value, never_indexed=name in NEVER_INDEXED)
                if name not in UNCACHED and len(name) + len(value) <= _CACHE_FIELD_MAX:
                    if len(cache) >= _CACHE_MAX:
                        cache.clear()
                    cache[field] = enc
            parts.append(enc)
        return b"".join(parts)
