"""One eyeball request carried over one data stream to a connector and back.

The edge sends a `ConnectRequest` head (method, host, headers and the headers the edge adds),
then the request body, then ends its side; the transport decides how the head travels (see
transport/base.py). It receives the connector's `ConnectResponse` and relays the body to the
client as it arrives. A `ConnectResponse.error`, a
reset stream or a dead connection before the response head become a 502 page with the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from nbtunnel.core.errors import NbtunnelError, ProtocolError
from nbtunnel.core.httpmeta import build_connect_request, parse_http_response, request_has_body
from nbtunnel.core.streams import ConnectRequest, ConnectResponse
from nbtunnel.edge.pages import error_page, reason
from nbtunnel.transport.base import DataStream
from nbtunnel.transport.errors import TransportClosedError, TransportError

if TYPE_CHECKING:
    from nbtunnel.edge.front import Request
    from nbtunnel.edge.registry import LiveConnection

log = logging.getLogger("nbtunnel.edge.exchange")

# Hop-by-hop headers are the client's business with this front, never forwarded.
_REQUEST_DROP = {
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade",
    "cf-connecting-ip", "cf-ray", "cf-visitor", "x-forwarded-proto", "expect",
}
_RESPONSE_DROP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "trailer"}
_NO_BODY_STATUS = {204, 304}
_REPLAYABLE = {"GET", "HEAD", "OPTIONS"}


class ExchangeError(NbtunnelError):
    """The request could not be handed to the connector (stream or connection failure)."""


def switched_page(host: str) -> str:
    """The 502 detail when the connector switched protocols for a plain request."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return (f"The connector answered 101 Switching Protocols to a request that did not ask to "
            f"upgrade: {name} serves a TCP service (a tcp:// or ssh:// rule), not a web page. "
            f"Reach it with `nbtunnel access tcp --hostname {name} --url 127.0.0.1:PORT` or "
            f"`cloudflared access tcp --hostname {name} --url 127.0.0.1:PORT`.")


def metadata_headers(req: Request) -> list[tuple[str, str]]:
    """The request headers sent to the connector: the client's minus hop-by-hop ones, plus
    what the edge adds (Cf-Connecting-Ip, X-Forwarded-For/-Proto, Cf-Visitor, Cf-Ray)."""
    out: list[tuple[str, str]] = []
    xff = ""
    for raw_name, raw_value in req.headers:
        name = raw_name.decode("latin-1")
        lname = name.lower()
        if lname in _REQUEST_DROP:
            continue
        if lname == "x-forwarded-for":
            xff = raw_value.decode("latin-1") + ", "
            continue
        out.append((name, raw_value.decode("latin-1")))
    out.append(("Cf-Connecting-Ip", req.client_ip))
    out.append(("X-Forwarded-For", xff + req.client_ip))
    out.append(("X-Forwarded-Proto", req.scheme))
    out.append(("Cf-Visitor", f'{{"scheme":"{req.scheme}"}}'))
    out.append(("Cf-Ray", req.ray))
    return out


class Exchange:
    """Drives one request/response pair over a fresh data stream."""

    def __init__(
        self,
        live: LiveConnection,
        req: Request,
        writer: asyncio.StreamWriter,
        repick: Callable[[LiveConnection], LiveConnection | None] = lambda _: None,
    ) -> None:
        self.live = live
        self.repick = repick
        self._request: ConnectRequest | None = None
        self.req = req
        self.writer = writer
        self.stream: DataStream | None = None  # once start() opened it
        self.has_body = False
        self.keep = req.keep_alive
        self._body_broken = False
        self._response: asyncio.Task[None] | None = None
        self._head_decided: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.status = 0
        self._counted = False  # this exchange is in self.live.in_flight

    def _metadata_headers(self) -> list[tuple[str, str]]:
        return metadata_headers(self.req)

    async def start(self) -> None:
        req = self.req
        headers = self._metadata_headers()
        self.has_body = not req.upgrade and request_has_body(headers)
        self._request = build_connect_request(
            req.method, req.host, req.target, headers, scheme=req.scheme, websocket=req.upgrade
        )
        await self._send_head()
        self._response = asyncio.get_running_loop().create_task(self._respond())

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

    async def _read_head_or_retry(self) -> ConnectResponse:
        """A connection that dies before answering (a SIGKILLed replica) gets one retry on
        another connection, for requests that are safe to replay: idempotent, no body."""
        try:
            return await self._read_head()
        except TransportClosedError as exc:
            replayable = self.req.method in _REPLAYABLE and not self.has_body
            other = self.repick(self.live) if replayable and not self.req.upgrade else None
            if other is None:
                raise ExchangeError(f"the connector connection died: {exc}") from exc
            log.info("retrying %s on connection %s: %s", self.req.ray, other.connection_id, exc)
            self._done()
            self.live = other
            await self._send_head()
            return await self._read_head()

    async def request_body(self, chunk: bytes) -> None:
        if not self.has_body or self._body_broken:
            return
        assert self.stream is not None
        try:
            await self.stream.write(chunk)
        except TransportError:
            self._body_broken = True  # the response side reports the failure

    async def finish(self) -> bool:
        """Request fully read: end the stream's write side and wait for the response."""
        if self.has_body and not self._body_broken and self.stream is not None:
            with contextlib.suppress(TransportError):
                self.stream.write_eof()
        assert self._response is not None
        await self._response
        return self.keep

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

    async def _read_head(self) -> ConnectResponse:
        assert self.stream is not None
        return await self.stream.receive_response()

    async def _respond(self) -> None:
        try:
            try:
                resp = await self._read_head_or_retry()
                if resp.error:
                    raise ExchangeError(resp.error)
                status, headers = parse_http_response(resp)
            except (ExchangeError, ProtocolError, TransportError) as exc:
                self._error_page(502, str(exc))
                self._head_decided.set_result(False)
                return
            self.status = status
            if status == 101 and not self.req.upgrade:
                # a stream origin (tcp://, ssh://) acks any request with 101: never forward a
                # switch of protocols to a client that did not ask for one
                assert self.stream is not None
                self.stream.reset(0)
                self.keep = False
                self._error_page(502, switched_page(self.req.host))
                self._head_decided.set_result(False)
                return
            upgraded = self.req.upgrade and status == 101
            self._head_decided.set_result(upgraded)
            await self._relay(status, headers, upgraded)
        finally:
            if not self._head_decided.done():
                self._head_decided.set_result(False)
            self._done()

    async def _relay(self, status: int, headers: list[tuple[str, str]], upgraded: bool) -> None:
        length: int | None = None
        head = [b"HTTP/1.1 %d %s\r\n" % (status, reason(status).encode())]
        for name, value in headers:
            lname = name.lower()
            if lname in _RESPONSE_DROP and not (upgraded and lname == "connection"):
                continue
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                continue  # never let a connector inject header lines
            if lname == "content-length":
                try:
                    length = int(value)
                except ValueError:
                    continue
            head.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
        no_body = not upgraded and (
            self.req.method == "HEAD" or status in _NO_BODY_STATUS or 100 <= status < 200
        )
        chunked = False
        if not no_body and length is None and not upgraded:
            if self.req.version == "1.1":
                chunked = True
                head.append(b"Transfer-Encoding: chunked\r\n")
            else:
                self.keep = False
        head.append(b"Cf-Ray: %s\r\n" % self.req.ray.encode())
        if not self.keep and not upgraded:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        self.writer.write(b"".join(head))
        sent = 0
        stream = self.stream
        assert stream is not None
        try:
            while True:
                data = await stream.read(65536)
                if not data:
                    break
                if no_body:
                    continue
                sent += len(data)
                if chunked:
                    self.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                else:
                    self.writer.write(data)
                await self.writer.drain()
        except (TransportError, ProtocolError) as exc:
            log.info("response %s broke after %d bytes: %s", self.req.ray, sent, exc)
            self.keep = False
            self.writer.transport.abort()  # a truncated body must not look complete
            return
        except ConnectionError as exc:
            # The client went away. Stop the connector too (STOP_SENDING): cloudflared has
            # no write timeout, so otherwise its request and origin connection hang, and the
            # unread stream holds its receive window here, until the connection ends.
            log.debug("client of %s left after %d bytes: %s", self.req.ray, sent, exc)
            self.keep = False
            stream.reset(0)
            return
        if chunked:
            self.writer.write(b"0\r\n\r\n")
        if length is not None and not no_body and sent != length:
            self.keep = False
        await self.writer.drain()

    def _error_page(self, status: int, detail: str) -> None:
        from nbtunnel.edge.pages import wants_html

        log.info("%s %s%s -> %d: %s", self.req.method, self.req.host, self.req.target,
                 status, detail)
        ctype, body = error_page(status, detail, ray=self.req.ray,
                                 as_html=wants_html(self.req.headers))
        self.writer.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nCf-Ray: %s\r\n"
            b"Server: nbtunnel\r\n%s\r\n%s"
            % (status, reason(status).encode(), ctype, len(body), self.req.ray.encode(),
               b"" if self.keep else b"Connection: close\r\n",
               b"" if self.req.method == "HEAD" else body)
        )

    async def run_upgraded(self, reader: asyncio.StreamReader, rest: bytes) -> None:
        """WebSocket: after a 101, pipe raw bytes both ways until either side ends."""
        upgraded = await self._head_decided
        if not upgraded:
            self.keep = False
            assert self._response is not None
            await self._response
            await self.writer.drain()
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
