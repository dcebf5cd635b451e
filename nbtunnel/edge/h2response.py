"""The one response writer of the HTTPS front's HTTP/2 side: what `ResponseWriter` is for
HTTP/1.1, with the same interface, so `Exchange` relays, checks and times out a connector's
answer the same way on both fronts.

HTTP/2 frames every response itself, so the rules are fewer: a body never runs past the
Content-Length it states (the rest is dropped and the stream ends as stated), a body that
ends short is reset (RST_STREAM) so it never looks whole, HEAD, 204 and 304 get no body.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from nbtunnel.core.h2headers import response_fields
from nbtunnel.edge.pages import error_page

if TYPE_CHECKING:
    from nbtunnel.edge.deadline import Deadline
    from nbtunnel.edge.h2stream import FrontStream

_NO_BODY_STATUS = frozenset({204, 304})


class H2ResponseWriter:
    """One response on one HTTP/2 request stream."""

    def __init__(self, stream: FrontStream, *, ray: str, method: str = "GET") -> None:
        self.stream = stream
        self.ray = ray
        self.method = method
        self.keep_alive = True  # one stream: the connection is never at stake
        self.deadline: Deadline | None = None  # unused: h2front bounds every send itself
        self.started = False
        self.status = 0
        self.overflow = False
        """The body ran past its Content-Length (the extra bytes were not sent)."""
        self._no_body = False
        self._length: int | None = None
        self._sent = 0
        self._pending = b""
        self._ended = False

    def page(self, status: int, detail: str, *, as_html: bool = False, close: bool = False,
             extra: list[tuple[str, str]] | None = None) -> None:
        """An edge-generated status page (``close`` has no meaning for one stream)."""
        ctype, body = error_page(status, detail, ray=self.ray, as_html=as_html)
        self.whole(status, [("content-type", ctype.decode()), *(extra or [])], body)

    def whole(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """A response whose body is known; the body is sent by :meth:`end`."""
        self.start(status, [*headers, ("content-length", str(len(body))), ("server", "nbtunnel")],
                   length=len(body))
        self.add(body)

    def start(self, status: int, headers: list[tuple[str, str]], *, length: int | None,
              upgraded: bool = False) -> None:
        """Send the head. ``headers`` passed the response checks and carry no Content-Length
        but the one ``length`` states."""
        assert not self.started and not upgraded  # HTTP/2 clients cannot ask to upgrade
        self.started = True
        self.status = status
        self._length = length
        self._no_body = self.method == "HEAD" or status in _NO_BODY_STATUS
        fields = response_fields(status, headers)
        fields.append((b"cf-ray", self.ray.encode()))
        self.stream.respond(fields, end=False)

    @property
    def held(self) -> int:
        """Body bytes held for the next flush."""
        return len(self._pending)

    def add(self, data: bytes) -> bool:
        """Hold body bytes; False once the body reached its stated Content-Length (whatever
        comes after is not sent)."""
        if self._no_body or not data:
            return True
        if self._length is not None and self._sent + len(data) > self._length:
            data = data[: self._length - self._sent]
            self.overflow = True
        self._sent += len(data)
        self._pending += data
        return not self.overflow

    async def flush(self) -> None:
        """Send what is held, within the client's window."""
        if self._pending:
            pending, self._pending = self._pending, b""
            await self.stream.write(pending)

    async def body(self, data: bytes) -> bool:
        """Send body bytes within the client's window (see ``add``)."""
        more = self.add(data)
        await self.flush()
        return more

    async def end(self) -> bool:
        """Finish the stream; a body shorter than its Content-Length is reset instead."""
        if self._ended:
            return True
        self._ended = True
        try:
            await self.flush()
            if self._length is not None and not self._no_body and self._sent < self._length:
                self.stream.abort()  # the visitor sees the truncation
                return False
            self.stream.end()
        except ConnectionError:
            return False  # the client reset the stream or left
        return True

    def abort(self) -> None:
        """A relayed body broke: reset the stream so a truncated body never looks whole."""
        with contextlib.suppress(ConnectionError):
            self.stream.abort()
