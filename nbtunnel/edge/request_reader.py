"""Sans-I/O reader of the requests a visitor sends to the public front.

Bytes in, events out: `Request` (everything the front needs about one message, captured
inside the parser callbacks, so requests that share a TCP segment each keep their own method,
version and keep-alive), body chunks, the end of each message, and a `Refusal` (status and
reason) for anything the front must not forward. httptools (llhttp) parses; this module adds
the rules llhttp leaves to the server: head size and field count, exactly one Host, the
absolute-form target, and chunked trailers that are dropped (RFC 9112 7.1.2: never merged
into the head).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

MAX_HEAD_BYTES = 64 * 1024
MAX_FIELDS = 256


def _cases(name: str) -> frozenset[bytes]:
    """``name`` in every mix of upper and lower case."""
    out = {""}
    for ch in name:
        out = {s + c for s in out for c in {ch.lower(), ch.upper()}}
    return frozenset(s.encode() for s in out)


_HOST = _cases("host")
"""b"host" in every case (a set lookup per field instead of a lower())."""


@dataclass(slots=True)
class Request:
    """One request head as the fronts see it (names and values are the visitor's raw bytes;
    the HTTPS front's HTTP/2 side builds the same from its decoded header list)."""

    method: str
    target: str
    """Origin-form target (an absolute-form one is rewritten to its path and query)."""
    host: str
    """Authority: the absolute-form target's, else the Host header's."""
    headers: list[tuple[bytes, bytes]]
    version: str
    keep_alive: bool
    upgrade: bool
    """The visitor asked for a WebSocket upgrade."""
    client_ip: str = ""
    ray: str = ""
    """Set by the front when it takes the request."""
    scheme: str = "http"  # what the client spoke to us: "https" on the HTTPS front


@dataclass
class Refusal:
    """A request the front answers itself and then closes the connection."""

    status: int
    detail: str


@dataclass
class Body:
    data: bytes


class End:
    """The end of a request message (one instance: `END`)."""

    __slots__ = ()


END = End()

Event = Request | Body | End | Refusal


class RequestReader:
    """Feed bytes with :meth:`feed`; it returns the events they complete.

    After a `Refusal` (or an upgrade) nothing more is returned: the front answers and closes.
    """

    def __init__(self, *, max_head_bytes: int = MAX_HEAD_BYTES, max_fields: int = MAX_FIELDS,
                 client_ip: str = "", scheme: str = "http") -> None:
        self.client_ip = client_ip
        self.scheme = scheme
        self.max_head_bytes = max_head_bytes
        self.max_fields = max_fields
        self._parser = httptools.HttpRequestParser(self)
        self._events: list[Event] = []
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._hosts = 0  # Host fields of the current head
        self._head_bytes = 0
        self.in_head = False
        """A request head has started and is not complete yet."""
        self.in_message = False
        """A request has started and its end was not read yet."""
        self._done = False
        self.upgraded_rest: bytes | None = None
        """Bytes after a WebSocket upgrade request's head (the start of the WebSocket)."""

    def feed(self, data: bytes) -> list[Event]:
        if self._done:
            return []
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade(data[exc.args[0]:])
        except httptools.HttpParserError as exc:
            if self._head_bytes > self.max_head_bytes:
                self._refuse(431, "The request head is too large.")
            else:
                self._refuse(400, f"Malformed request: {exc}")
        events, self._events = self._events, []
        return events

    # httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._hosts = 0
        self._head_bytes = 0
        self.in_head = self.in_message = True

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > self.max_head_bytes:
            self._refuse(431, "The request head is too large.")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.in_head:
            return  # a chunked trailer: dropped, never merged into the head
        self._headers.append((name, value))
        if name in _HOST:
            self._hosts += 1
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self.max_head_bytes:
            self._refuse(431, "The request head is too large.")

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self._done:
            return
        if self._head_bytes > self.max_head_bytes:
            self._refuse(431, "The request head is too large.")
            return
        if len(self._headers) > self.max_fields:
            self._refuse(431, f"The request has more than {self.max_fields} header fields.")
            return
        parser = self._parser
        method = parser.get_method().decode("latin-1")
        if method == "CONNECT":
            self._refuse(405, "CONNECT is not supported by this edge.")
            return
        if self._hosts > 1:
            self._refuse(400, "The request has more than one Host header.")
            return
        headers = self._headers
        target = self._url.decode("latin-1")
        host = ""
        if self._hosts:
            for name, value in headers:
                if name in _HOST:
                    host = value.decode("latin-1").strip()
                    break
        if not target.startswith("/") and target != "*":
            parts = urlsplit(target)  # absolute-form (RFC 9112 3.2.2): its authority routes
            if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
                self._refuse(400, "The request target is not origin-form or absolute-form.")
                return
            host = parts.netloc.rsplit("@", 1)[-1]
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            headers = self._headers = [(n, v) for n, v in headers if n not in _HOST]
            headers.insert(0, (b"Host", host.encode("latin-1")))
        if not host:
            self._refuse(400, "The request has no Host header.")
            return
        upgrade = bool(parser.should_upgrade()) and any(
            n.lower() == b"upgrade" and v.strip().lower() == b"websocket"
            for n, v in headers)
        self._events.append(Request(
            method, target, host, headers, parser.get_http_version(),
            bool(parser.should_keep_alive()), upgrade, self.client_ip, "", self.scheme))

    def on_body(self, body: bytes) -> None:
        if not self._done:
            self._events.append(Body(body))

    def on_message_complete(self) -> None:
        self.in_message = False
        if not self._done:
            self._events.append(END)

    # internals --------------------------------------------------------------------------

    def _refuse(self, status: int, detail: str) -> None:
        if not self._done:
            self._events.append(Refusal(status, detail))
            self._done = True

    def _upgrade(self, rest: bytes) -> None:
        """llhttp stops at an upgrade request's head. A WebSocket continues as raw bytes;
        any other upgrade (h2c, ...) was answered as a plain request: close after it."""
        if self._done:
            return
        head = next((e for e in reversed(self._events) if isinstance(e, Request)), None)
        if head is not None and head.upgrade:
            self.upgraded_rest = rest
        elif head is not None:
            head.keep_alive = False
        self._done = True
