"""What an unauthenticated HTTP/2 client may make the HTTPS front do, sans I/O.

h2 (the state machine) checks the protocol; it does not bound the work a client can cause
within it. :class:`H2Guard` sees the raw frame headers a client sends (bytes and ``now`` in,
a reason to end the connection out) and bounds:

- frames that cost the edge work but carry no request: PING, SETTINGS, PRIORITY,
  RST_STREAM (rapid reset, CVE-2023-44487), empty DATA and CONTINUATION frames, unknown
  types, and streams refused for being over the concurrency cap. Each costs one unit of a
  leaky bucket (`budget` units, drained at `leak` units per second); an empty bucket means
  GOAWAY ENHANCE_YOUR_CALM. A browser stays far below it: it opens streams to use them.
- header blocks (HEADERS + CONTINUATION): their encoded size (HPACK never encodes a field
  list in more bytes than it decodes to, apart from table-size updates and padding, so the
  decoded limit bounds it) and how long one takes (:attr:`header_block_since`, for the
  head deadline). h2 alone buffers up to 64 frames (1 MiB) of an unfinished block, with no
  deadline (the CONTINUATION flood).
"""

from __future__ import annotations

PREFACE_SIZE = 24  # b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER = 9
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4

BUDGET = 1000.0
"""Units of work-without-requests a connection may cause at once."""
LEAK = 100.0
"""Units per second the budget recovers."""


class H2Guard:
    """One client connection (after TLS, from its first byte: the preface is skipped)."""

    def __init__(self, *, max_header_block: int, budget: float = BUDGET,
                 leak: float = LEAK) -> None:
        self.max_header_block = max_header_block
        self.budget = budget
        self.leak = leak
        self.used = 0.0
        """Units of the budget in use."""
        self.header_block_since: float | None = None
        """When the unfinished header block started (None: none is)."""
        self._block_size = 0
        self._last: float | None = None
        self._skip = PREFACE_SIZE
        self._head = bytearray()
        self._refused: str | None = None

    def feed(self, data: bytes, now: float) -> str | None:
        """Account for bytes the client sent; the reason to end the connection, if any."""
        view = memoryview(data)
        while view and self._refused is None:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                continue
            need = FRAME_HEADER - len(self._head)
            self._head += view[:need]
            view = view[need:]
            if len(self._head) == FRAME_HEADER:
                self._frame(bytes(self._head), now)
                self._head.clear()
        return self._refused

    def charge(self, units: float, now: float, why: str) -> str | None:
        """Spend budget (also for events only the connection sees, e.g. a refused stream)."""
        if self._last is not None:
            self.used = max(0.0, self.used - (now - self._last) * self.leak)
        self._last = now
        self.used += units
        if self.used > self.budget and self._refused is None:
            self._refused = f"too many {why} frames without requests"
        return self._refused

    def _frame(self, header: bytes, now: float) -> None:
        length = int.from_bytes(header[:3], "big")
        kind, flags = header[3], header[4]
        self._skip = length
        if kind in (HEADERS, CONTINUATION):
            self._header_block(kind, flags, length, now)
        elif kind == DATA:
            if length == 0 and not flags & END_STREAM:
                self.charge(1, now, "empty DATA")
        elif kind in (PING, SETTINGS):
            if not flags & ACK:
                self.charge(1, now, "PING" if kind == PING else "SETTINGS")
        elif kind == PRIORITY:
            self.charge(1, now, "PRIORITY")
        elif kind == RST_STREAM:
            self.charge(1, now, "RST_STREAM")
        elif kind not in (WINDOW_UPDATE, GOAWAY, PUSH_PROMISE):
            self.charge(1, now, "unknown")

    def _header_block(self, kind: int, flags: int, length: int, now: float) -> None:
        if kind == HEADERS:
            self._block_size = 0
            self.header_block_since = now
        elif length == 0:
            self.charge(1, now, "empty CONTINUATION")
        self._block_size += length
        if self._block_size > self.max_header_block:
            self._refused = (f"a header block over {self.max_header_block} bytes "
                             "(HEADERS + CONTINUATION)")
        elif flags & END_HEADERS:
            self.header_block_since = None
