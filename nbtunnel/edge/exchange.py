"""One eyeball request carried over one data stream to a connector and back.

The edge sends a `ConnectRequest` head (method, host, headers and the headers the edge adds),
then the request body, then ends its side; the transport decides how the head travels (see
transport/base.py). It receives the connector's `ConnectResponse` and relays the body to the
client as it arrives. A `ConnectResponse.error`, a reset stream, a dead connection or a head
that fails `check_response_head` become a 502 page with the cause; no head within the
response deadline becomes a 524.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from nbtunnel.core.errors import NbtunnelError, ProtocolError
from nbtunnel.core.http1 import strip_port
from nbtunnel.core.streams import ConnectRequest, ConnectResponse
from nbtunnel.edge.deadline import Deadline
from nbtunnel.edge.forwarding import forwarded_request, metadata_size
from nbtunnel.edge.limits import FrontLimits
from nbtunnel.edge.pages import wants_html
from nbtunnel.edge.response_check import BadResponseError, CheckedHead, check_connect_response
from nbtunnel.edge.response_writer import FLUSH_AT
from nbtunnel.transport.base import DataStream
from nbtunnel.transport.errors import TransportClosedError, TransportError

if TYPE_CHECKING:
    from nbtunnel.edge.front import Request
    from nbtunnel.edge.registry import LiveConnection

log = logging.getLogger("nbtunnel.edge.exchange")

_REPLAYABLE = {"GET", "HEAD", "OPTIONS"}


def switched_page(host: str) -> str:
    """The 502 detail when the connector switched protocols for a plain request."""
    name = strip_port(host)
    return (f"The connector answered 101 Switching Protocols to a request that did not ask to "
            f"upgrade: {name} serves a TCP service (a tcp:// or ssh:// rule), not a web page. "
            f"Reach it with `nbtunnel access tcp --hostname {name} --url 127.0.0.1:PORT` or "
            f"`cloudflared access tcp --hostname {name} --url 127.0.0.1:PORT`.")


class ResponseOut(Protocol):
    """Where an exchange writes its response: `ResponseWriter` (HTTP/1.1) or
    `H2ResponseWriter` (one HTTP/2 stream)."""

    keep_alive: bool
    started: bool
    status: int
    deadline: Deadline | None
    """The writing task's deadline: the HTTP/1.1 writer waits for the client under it
    (`FrontLimits.send_timeout`); the HTTP/2 side bounds its sends in h2front."""

    def page(self, status: int, detail: str, *, as_html: bool = False, close: bool = False,
             extra: list[tuple[str, str]] | None = None) -> None: ...

    def start(self, status: int, headers: list[tuple[str, str]], *, length: int | None,
              upgraded: bool = False) -> None: ...

    @property
    def held(self) -> int:
        """Bytes held for the next flush (a relay flushes before it would wait)."""
        ...

    def add(self, data: bytes) -> bool:
        """Hold body bytes; False once the stated Content-Length is reached."""
        ...

    async def flush(self) -> None: ...

    async def body(self, data: bytes) -> bool: ...

    async def end(self) -> bool: ...

    def abort(self) -> None: ...


Repick = Callable[["LiveConnection"], Awaitable["LiveConnection | None"]]
"""Another connection for a retry, excluding the one that failed."""


class ExchangeError(NbtunnelError):
    """The request could not be handed to the connector (stream or connection failure)."""


class HeadTooLargeError(ExchangeError):
    """The request head would exceed what a connector accepts as metadata (431)."""


class ResponseTimeoutError(ExchangeError):
    """The connector did not answer within the response deadline (524)."""


class Exchange:
    """Drives one request/response pair over a fresh data stream."""

    __slots__ = ("_body_broken", "_counted", "_deadline", "_head_decided", "_request",
                 "_response", "_sent_at", "expects_continue", "has_body", "limits", "live", "out",
                 "repick", "req", "status", "stream")

    def __init__(
        self,
        live: LiveConnection,
        req: Request,
        out: ResponseOut,
        repick: Repick | None = None,
        *,
        limits: FrontLimits | None = None,
    ) -> None:
        self.live = live
        self.repick = repick
        self.limits = limits or FrontLimits()
        self._request: ConnectRequest | None = None
        self.req = req
        self.out = out
        self.stream: DataStream | None = None  # once start() opened it
        self.has_body = False
        self.expects_continue = False  # the visitor sent Expect: 100-continue
        self._body_broken = False
        self._response: asyncio.Task[None] | None = None  # requests with a body or upgrade
        self._head_decided: asyncio.Future[bool] | None = None  # upgrade requests
        self.status = 0
        self._counted = False  # this exchange is in self.live.in_flight
        self._sent_at: float | None = None  # when the whole request was handed over
        self._deadline: Deadline | None = None  # while the response head is awaited

    async def start(self) -> None:
        req = self.req
        self._request, has_body, self.expects_continue = forwarded_request(req)
        self.has_body = has_body and not req.upgrade
        size = metadata_size(self._request)
        if size > self.limits.max_metadata_bytes:
            raise HeadTooLargeError(
                f"The request head is too large (about {size} bytes as tunnel metadata).")
        await self._send_head()
        if not self.has_body:
            self._request_sent()
        if self.has_body or req.upgrade:
            # the response may come while the body still flows (or the client's bytes do)
            loop = asyncio.get_running_loop()
            if req.upgrade:
                self._head_decided = loop.create_future()
            self._response = loop.create_task(self._respond())
        # else: finish() awaits the response in the client connection's own task

    @property
    def response(self) -> asyncio.Task[None]:
        """The task that reads the connector's answer and relays it (after start())."""
        assert self._response is not None
        return self._response

    def _request_sent(self) -> None:
        """The response deadline runs from here (an upload may take longer than it)."""
        self._sent_at = asyncio.get_running_loop().time()
        if self._deadline is not None:
            self._deadline.arm(self._sent_at + self.limits.response_timeout)

    async def _send_head(self) -> None:
        assert self._request is not None
        try:
            self.stream = stream = self.live.transport.open_stream()
        except TransportError as exc:
            raise ExchangeError(f"the connector connection is gone: {exc}") from exc
        self.live.in_flight += 1
        self._counted = True
        try:
            await stream.send_request(
                self._request, end_stream=not self.has_body and not self.req.upgrade)
        except TransportError as exc:
            self._done()
            raise ExchangeError(f"could not open a data stream to the connector: {exc}") from exc

    async def _retry(self, exc: TransportClosedError) -> ConnectResponse:
        """A connection that dies before answering (a SIGKILLed replica) gets one retry on
        another connection, for requests that are safe to replay: idempotent, no body."""
        replayable = self.req.method in _REPLAYABLE and not self.has_body
        other = None
        if replayable and not self.req.upgrade and self.repick is not None:
            other = await self.repick(self.live)
        if other is None:
            raise ExchangeError(f"the connector connection died: {exc}") from exc
        log.info("retrying %s on connection %s: %s", self.req.ray, other.connection_id, exc)
        self._done()
        self.live = other
        await self._send_head()
        assert self.stream is not None
        return await self.stream.receive_response()

    async def request_body(self, chunk: bytes) -> None:
        if not self.has_body or self._body_broken:
            return
        assert self.stream is not None
        try:
            await self.stream.write(chunk)
        except TransportError:
            self._body_broken = True  # the response side reports the failure

    def finish(self, deadline: Deadline | None = None) -> Awaitable[None]:
        """Request fully read: end the stream's write side; await the result for the response
        (``deadline``: the calling task's, for a response awaited inline; afterwards
        ``out.keep_alive`` says whether the client connection stays open). The response
        coroutine itself, not one awaiting it: one frame less per resume."""
        if self.has_body and not self._body_broken and self.stream is not None:
            with contextlib.suppress(TransportError):
                self.stream.write_eof()
        if self._sent_at is None:
            self._request_sent()
        if self._response is None:
            return self._respond(deadline)
        return self._response

    async def abort(self, why: str) -> None:
        log.debug("abort %s: %s", self.req.ray, why)
        if self.stream is not None:
            with contextlib.suppress(Exception):
                self.stream.reset(0)
        if self._response is not None:
            self._response.cancel()
            await asyncio.wait([self._response])  # our own cancellation still propagates
            if not self._response.cancelled():
                self._response.exception()  # retrieved: its failure was already answered
        self._done()  # a task cancelled before it ever ran never reaches its `finally`

    def _done(self) -> None:
        if not self._counted:
            return
        self._counted = False
        live = self.live
        live.in_flight -= 1
        live.served += 1
        if live.draining and live.in_flight == 0:
            live.transport.close(0, "unregistered")

    async def _respond(self, deadline: Deadline | None = None) -> None:
        """The response: head (under the response deadline), checks, then the body (each wait
        for the client under the send deadline, in the writer). Runs in the client
        connection's task under that connection's ``deadline``, else (requests with a body or
        an upgrade) in its own task under a deadline of its own."""
        own = deadline is None
        if deadline is None:
            deadline = Deadline()
        out = self.out
        stream = self.stream
        assert stream is not None
        writes_under, out.deadline = out.deadline, deadline
        try:
            try:
                # the response deadline runs from the moment the whole request was handed
                # over (_request_sent arms it then, if the body is still flowing now)
                self._deadline = deadline
                if self._sent_at is not None:
                    deadline.arm(self._sent_at + self.limits.response_timeout)
                try:
                    try:
                        resp = await stream.receive_response()
                    except TransportClosedError as exc:
                        resp = await self._retry(exc)
                    finally:
                        stream = self.stream or stream  # another one after a retry
                except asyncio.CancelledError:
                    if deadline.expired():
                        raise TimeoutError from None
                    raise
                finally:
                    self._deadline = None
                    deadline.disarm()
                if resp.error:
                    raise ExchangeError(resp.error)
                head = check_connect_response(resp, upgrade_requested=self.req.upgrade)
            except TimeoutError:
                stream.reset(0)  # the connector cancels the origin request
                self._error_page(524, f"The origin did not answer within "
                                      f"{self.limits.response_timeout:g} seconds.")
                await out.end()
                return
            except (ExchangeError, ProtocolError, TransportError, BadResponseError) as exc:
                detail = str(exc)
                if isinstance(exc, BadResponseError):
                    stream.reset(0)
                    if exc.switched:  # a stream origin (tcp://, ssh://) acks anything with 101
                        detail = switched_page(self.req.host)
                self._error_page(502, detail)
                await out.end()
                return
            self.status = head.status
            if self._head_decided is not None:
                self._head_decided.set_result(head.upgraded)
            await self._relay(head)
        finally:
            if self._head_decided is not None and not self._head_decided.done():
                self._head_decided.set_result(False)
            self._done()
            out.deadline = writes_under
            if own:
                deadline.close()

    async def _relay(self, head: CheckedHead) -> None:
        out = self.out
        out.start(head.status, head.headers, length=head.length, upgraded=head.upgraded)
        stream = self.stream
        assert stream is not None
        try:
            while True:
                # what the stream has ready joins the held head: a small response is one send
                if not stream.readable or out.held > FLUSH_AT:
                    await out.flush()
                data = await stream.read(65536)
                if not data:
                    break
                if not out.add(data):
                    # more than Content-Length: the rest never reaches this (kept-alive) client
                    log.info("response %s ran past its Content-Length; cut", self.req.ray)
                    stream.reset(0)
                    break
        except (TransportError, ProtocolError) as exc:
            log.info("response %s broke: %s", self.req.ray, exc)
            out.abort()  # a truncated body must not look complete
            return
        except ConnectionError as exc:
            # The client went away. Stop the connector too (STOP_SENDING): cloudflared has
            # no write timeout, so otherwise its request and origin connection hang, and the
            # unread stream holds its receive window here, until the connection ends.
            log.debug("client of %s left: %s", self.req.ray, exc)
            out.keep_alive = False
            stream.reset(0)
            return
        await out.end()

    def _error_page(self, status: int, detail: str) -> None:
        log.info("%s %s%s -> %d: %s", self.req.method, self.req.host, self.req.target,
                 status, detail)
        self.out.page(status, detail, as_html=wants_html(self.req.headers))

    async def run_upgraded(self, reader: asyncio.StreamReader, rest: bytes) -> None:
        """WebSocket: after a 101, pipe raw bytes both ways until either side ends."""
        assert self._head_decided is not None
        upgraded = await self._head_decided
        if not upgraded:
            self.out.keep_alive = False
            assert self._response is not None
            await self._response
            await self.out.end()
            return
        stream = self.stream
        assert stream is not None
        try:
            if rest:
                await stream.write(rest)
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await stream.write(data)
        except (TransportError, ConnectionError):
            pass
        finally:
            # cloudflared tears the flow down when either direction ends (no half-close)
            with contextlib.suppress(Exception):
                stream.write_eof()
            assert self._response is not None
            if not self._response.done():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._response), 5)
                await self.abort("client ended the websocket")
