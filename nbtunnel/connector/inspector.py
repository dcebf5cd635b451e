"""The request inspector: the last requests a connector proxied, with headers and the first
KiBs of each body, and replay.

Capture stays off the hot path: bodies are passed through chunk by chunk as before and only
their first `BODY_LIMIT` bytes are copied; the ring buffer keeps `KEEP` finished exchanges, so
memory is bounded whatever the traffic. Server-sent events and WebSockets are recorded (head,
status, sizes) but their bodies are never copied. Secrets (Authorization, Cookie, Set-Cookie,
Proxy-Authorization) are masked in what is shown; the unmasked request is kept privately so a
replay can be sent again as it was.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from nbtunnel.core.httpmeta import HttpRequestHead

BODY_LIMIT = 4096
KEEP = 200
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


def mask(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers with secret values replaced (their length kept as a hint)."""
    return [(k, f"[masked, {len(v)} chars]" if k.lower() in SECRET_HEADERS else v)
            for k, v in headers]


def show_body(data: bytes, truncated: bool) -> str:
    """Text if it decodes as UTF-8 text, else a hex dump; notes a truncation."""
    try:
        text = data.decode()
        printable = all(c.isprintable() or c in "\r\n\t" for c in text)
    except UnicodeDecodeError:
        printable = False
    if not printable:
        text = "\n".join(f"{i:08x}  {data[i:i + 16].hex(' ')}" for i in range(0, len(data), 16))
    return text + (f"\n... (first {len(data)} bytes shown)" if truncated else "")


@dataclass(frozen=True)
class Capture:
    """One finished exchange as the inspector shows it (headers masked)."""

    id: int
    time: float  # wall clock (epoch seconds) when the request arrived
    method: str
    host: str
    target: str  # path?query
    request_headers: list[tuple[str, str]]
    request_body: bytes
    request_size: int
    status: int
    response_headers: list[tuple[str, str]]
    response_body: bytes
    response_size: int
    duration: float
    error: str = ""
    streamed: bool = False  # SSE or WebSocket: body not copied
    replay_of: int | None = None
    _raw_headers: list[tuple[str, str]] = field(default_factory=list, repr=False)
    _service: str = field(default="", repr=False)

    @property
    def request_truncated(self) -> bool:
        return self.request_size > len(self.request_body)

    @property
    def response_truncated(self) -> bool:
        return self.response_size > len(self.response_body)

    @property
    def replayable(self) -> bool:
        return bool(self._service) and not self.request_truncated and not self.streamed

    def request_text(self) -> str:
        return show_body(self.request_body, self.request_truncated)

    def response_text(self) -> str:
        return show_body(self.response_body, self.response_truncated)

    def head(self) -> HttpRequestHead:
        """The request as it reached the connector (unmasked), for a replay."""
        return HttpRequestHead(self.method, self.host, self.target, list(self._raw_headers),
                               False)


class Recorder:
    """Collects one exchange while it runs; `Inspector.finish` turns it into a Capture."""

    __slots__ = ("body_in", "body_out", "capture", "duration", "error", "head", "id",
                 "replay_of", "resp_headers", "service", "size_in", "size_out", "started",
                 "status", "streamed", "wall")

    def __init__(self, head: HttpRequestHead, service: str, replay_of: int | None) -> None:
        self.head, self.service, self.replay_of = head, service, replay_of
        self.wall, self.started = time.time(), time.monotonic()
        self.body_in = bytearray()
        self.body_out = bytearray()
        self.size_in = self.size_out = 0
        self.status = 0
        self.resp_headers: list[tuple[str, str]] = []
        self.error = ""
        self.streamed = head.websocket
        self.id = 0
        self.duration = 0.0
        self.capture: Capture | None = None  # built when first read, not on the hot path

    async def tee_request(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in body:
            self.size_in += len(chunk)
            if len(self.body_in) < BODY_LIMIT:
                self.body_in += chunk[:BODY_LIMIT - len(self.body_in)]
            yield chunk

    def response_head(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.status, self.resp_headers = status, headers
        if any(k.lower() == "content-type" and v.startswith("text/event-stream")
               for k, v in headers):
            self.streamed = True

    def saw_response_chunk(self, chunk: bytes) -> None:
        self.size_out += len(chunk)
        if not self.streamed and len(self.body_out) < BODY_LIMIT:
            self.body_out += chunk[:BODY_LIMIT - len(self.body_out)]


class Inspector:
    """A bounded ring of finished exchanges; mutated on the connector's loop only. Finishing
    an exchange only appends it: the masked, immutable `Capture` is built when it is read."""

    def __init__(self, keep: int = KEEP, on_change: Callable[[], None] | None = None) -> None:
        self.finished: deque[Recorder] = deque(maxlen=keep)
        self.on_change = on_change
        self._ids = itertools.count(1)

    @property
    def keep(self) -> int:
        return self.finished.maxlen or 0

    def start(self, head: HttpRequestHead, service: str,
              replay_of: int | None = None) -> Recorder:
        return Recorder(head, service, replay_of)

    def finish(self, rec: Recorder) -> Recorder:
        rec.id = next(self._ids)
        rec.duration = time.monotonic() - rec.started
        self.finished.append(rec)
        if self.on_change is not None:
            self.on_change()
        return rec

    def captures(self) -> list[Capture]:
        """The kept exchanges, oldest first (any thread: a snapshot)."""
        return [self.capture(r) for r in list(self.finished)]

    def get(self, capture_id: int) -> Capture | None:
        rec = next((r for r in list(self.finished) if r.id == capture_id), None)
        return None if rec is None else self.capture(rec)

    @staticmethod
    def capture(rec: Recorder) -> Capture:
        if rec.capture is None:
            head = rec.head
            rec.capture = Capture(
                id=rec.id, time=rec.wall, method=head.method, host=head.host,
                target=head.target, request_headers=mask(head.headers),
                request_body=bytes(rec.body_in), request_size=rec.size_in, status=rec.status,
                response_headers=mask(rec.resp_headers), response_body=bytes(rec.body_out),
                response_size=rec.size_out, duration=rec.duration, error=rec.error,
                streamed=rec.streamed, replay_of=rec.replay_of,
                _raw_headers=list(head.headers), _service=rec.service)
        return rec.capture
