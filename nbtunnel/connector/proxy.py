"""Serve one edge-opened stream: a data stream (HTTP / WebSocket) or a configuration push.

For a data stream we receive the `ConnectRequest` head, pick the ingress rule, proxy to the
origin and answer with a `ConnectResponse` head and the body; how heads travel is the
transport's business (transport/base.py). Errors reach the right party: an origin that cannot
be reached becomes `ConnectResponse.error` (the edge shows a 502 with the cause); garbage on
the stream resets that stream only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from nbtunnel.connector.events import RequestEvent
from nbtunnel.connector.head_watch import HeadWatch
from nbtunnel.connector.ingress import Ingress, OriginRequest
from nbtunnel.connector.origin import (
    OriginClient,
    OriginError,
    OriginResponse,
    OriginUpgrade,
    http_status_response,
)
from nbtunnel.connector.origin_guard import GuardedOrigin
from nbtunnel.connector.origin_parts import _Http1Body
from nbtunnel.connector.stream_origin import (
    Flow,
    StreamOriginError,
    StreamOrigins,
    is_stream_service,
)
from nbtunnel.core.errors import ProtocolError
from nbtunnel.core.http1 import HOP_BY_HOP, end_to_end
from nbtunnel.core.httpmeta import (
    HEADER_PREFIX,
    HTTP_STATUS,
    HttpRequestHead,
    build_connect_response,
    error_connect_response,
    parse_http_request,
    request_has_body,
)
from nbtunnel.core.streams import ConnectionType, ConnectRequest, ConnectResponse
from nbtunnel.transport.base import ConfigHandler, DataStream
from nbtunnel.transport.errors import StreamResetError, TransportError

log = logging.getLogger("nbtunnel.connector.proxy")

HEAD_TIMEOUT = 10.0
# cloudflared's internal ingress rule for its management service (live logs), which the
# `management_logs` feature advertises. nbtunnel does not implement that service, so these
# requests get a 404 here and never reach the user's origin, whatever the ingress says.
MANAGEMENT_HOSTNAME = "management.argotunnel.com"
_MANAGEMENT = Ingress.single("http_status:404")


class StreamProxy:
    """Stateless per-connection handler; the connector owns the ingress and origin client."""

    def __init__(
        self,
        origin: OriginClient | GuardedOrigin,
        ingress: Callable[[], Ingress],
        services: Callable[[str], str],
        emit: Callable[[RequestEvent], None] | None = None,
    ) -> None:
        self.origin = origin
        self.ingress = ingress
        self.services = services  # maps hello_world to the built-in server's URL
        self.emit = emit
        self.streams = StreamOrigins()  # tcp://, ssh://, ..., bastion and type=tcp streams
        self.heads = HeadWatch(HEAD_TIMEOUT)

    async def handle(self, stream: DataStream, conn_index: int, on_config: ConfigHandler,
                     task: asyncio.Task[Any] | None = None) -> None:
        """Serve ``stream`` in ``task`` (the current task, which the caller may pass)."""
        if task is None:
            task = asyncio.current_task()
            assert task is not None
        heads = self.heads
        heads.arm(task)
        try:
            head = await stream.receive_request()
        except (ProtocolError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and not heads.expired(task):
                raise
            log.warning("resetting stream with a bad head: %s", exc or "timeout")
            with contextlib.suppress(Exception):
                stream.reset(0)
            return
        finally:
            heads.disarm(task)
        if head is None:
            return  # the edge ended the stream before sending a head
        if not isinstance(head, ConnectRequest):
            await head.serve(on_config)  # a remote configuration
            return
        await self._data_stream(stream, head, conn_index, task)

    async def _data_stream(self, stream: DataStream, req: ConnectRequest, conn_index: int,
                           task: asyncio.Task[Any]) -> None:
        started = time.monotonic() if self.emit is not None else 0.0
        method, path, status, error = "?", "?", 0, ""
        counts = [0, 0]  # bytes in (request body), bytes out (response body)
        flow: Flow | None = None
        try:
            if req.type == ConnectionType.TCP:
                method, path = "TCP", req.dest
                flow = Flow()
                await self.streams.tcp(stream, req, self.ingress().warp_routing, flow)
                return
            head = parse_http_request(req)
            method = head.method
            host = head.host
            if host[:1] in "mM" and host.split(":")[0].rstrip(".").lower() == MANAGEMENT_HOSTNAME:
                ingress = _MANAGEMENT
            else:
                ingress = self.ingress()
            if ingress.uses_paths or self.emit is not None:  # else nobody reads the path
                path = _path_of(head.dest)
            _, rule = ingress.match(host, path)
            service = self.services(rule.service)
            if is_stream_service(service):
                flow = Flow()
                status = await self.streams.carrier(stream, head, service,
                                                    rule.origin.connect_timeout, flow)
            elif head.websocket:
                status = await self._websocket(stream, head, service, rule.origin)
            else:
                status = await self._http(stream, head, service, counts, rule.origin, task)
        except OriginError as exc:
            error = str(exc)
            with contextlib.suppress(TransportError):
                await stream.send_response(error_connect_response(error))
                stream.write_eof()
        except StreamOriginError as exc:
            error = str(exc)
            with contextlib.suppress(TransportError):
                await stream.send_response(exc.response())
                stream.write_eof()
        except ProtocolError as exc:
            error = f"bad request metadata: {exc}"
            with contextlib.suppress(TransportError):
                await stream.send_response(error_connect_response(error))
                stream.write_eof()
        except TransportError as exc:
            error = f"stream failed: {exc}"
            with contextlib.suppress(Exception):
                stream.reset(0)
        finally:
            if self.emit is not None:
                if flow is not None:
                    counts[0] += flow.bytes_in
                    counts[1] += flow.bytes_out
                self.emit(RequestEvent(conn_index, method, path, status,
                                       time.monotonic() - started, counts[0], counts[1],
                                       error))

    async def _http(
        self, stream: DataStream, head: HttpRequestHead, service: str, counts: list[int],
        opts: OriginRequest, task: asyncio.Task[Any],
    ) -> int:
        """The exchange, cancelled when the edge sends STOP_SENDING (its client went away),
        so a silent origin response does not hold the origin connection forever: a
        done-callback on the stream's stop future, not a watcher task."""
        abandon = _Abandon(task)
        stopped = stream.peer_stopped()
        stopped.add_done_callback(abandon.fire)
        try:
            body = _body(stream, counts) if request_has_body(head.headers) else None
            if service.startswith("http_status:"):
                resp: OriginResponse = await http_status_response(int(service[12:]))
            else:
                resp = await self.origin.request(service, head, body,
                                                 no_tls_verify=opts.no_tls_verify,
                                                 http_host_header=opts.http_host_header,
                                                 connect_timeout=opts.connect_timeout,
                                                 server_name=opts.origin_server_name,
                                                 disable_chunked=opts.disable_chunked_encoding)
            return await _relay(stream, resp, counts)
        except asyncio.CancelledError:
            if abandon.fired and task.uncancel() == 0:
                raise StreamResetError(0, "the edge abandoned the request") from None
            raise
        finally:
            stopped.remove_done_callback(abandon.fire)

    async def _websocket(
        self, stream: DataStream, head: HttpRequestHead, service: str, opts: OriginRequest,
    ) -> int:
        if service.startswith("http_status:"):
            code = int(service.split(":", 1)[1])
            await stream.send_response(build_connect_response(code, []))
            stream.write_eof()
            return code
        result = await self.origin.websocket(service, head, no_tls_verify=opts.no_tls_verify,
                                             http_host_header=opts.http_host_header)
        if isinstance(result, OriginResponse):
            return await _relay(stream, result, [0, 0])
        up: OriginUpgrade = result
        await stream.send_response(build_connect_response(up.status, up.headers))
        try:
            await _pipe_both(stream, up)
        finally:
            up.writer.close()
        return up.status


class _Abandon:
    """Cancels the exchange's task once the edge stopped the stream (see `_http`)."""

    __slots__ = ("_task", "fired")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self._task = task
        self.fired = False

    def fire(self, done: asyncio.Future[None]) -> None:
        if not done.cancelled():
            self.fired = True
            self._task.cancel()


_STATUS = {code: str(code) for code in (200, 204, 206, 301, 302, 304, 400, 401, 403, 404, 500)}


def response_head(status: int, headers: list[tuple[str, str]]) -> ConnectResponse:
    """``build_connect_response(status, end_to_end(headers))`` in one pass over the origin's
    fields when none is a Connection header (which may nominate more fields to drop)."""
    meta = [(HTTP_STATUS, _STATUS.get(status) or str(status))]
    for name, value in headers:
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == "connection":
                return build_connect_response(status, end_to_end(headers))
            continue
        meta.append((HEADER_PREFIX + name, value))
    return ConnectResponse("", meta)


async def _relay(stream: DataStream, resp: OriginResponse, counts: list[int]) -> int:
    """The response head, then its body as the origin delivers it, then the end. A body that
    is all here already goes with its head and the end in one piece when the transport can
    (`send_complete_response`: QUIC, one library call instead of three)."""
    body = resp.body
    head = response_head(resp.status, resp.headers)
    try:
        if isinstance(body, _Http1Body):
            chunk = body.ready()
            whole = getattr(stream, "send_complete_response", None)
            if chunk is not None and whole is not None:
                after = body.ready() if chunk else b""
                if after == b"":  # the whole body: one piece
                    counts[1] += len(chunk)
                    await whole(head, chunk)
                    return resp.status
                await stream.send_response(head)
                counts[1] += len(chunk)
                await stream.write(chunk)
                chunk = after
            else:
                await stream.send_response(head)
            while True:  # what is buffered goes without a coroutine per chunk
                if chunk is None:
                    try:
                        chunk = await body.__anext__()
                    except StopAsyncIteration:
                        break
                elif not chunk:
                    break
                counts[1] += len(chunk)
                await stream.write(chunk)
                chunk = body.ready()
        else:
            await stream.send_response(head)
            async for chunk in body:
                counts[1] += len(chunk)
                await stream.write(chunk)
        stream.write_eof()
    finally:
        if not (isinstance(body, _Http1Body) and body.finished):
            await resp.aclose()
    return resp.status


def _path_of(dest: str) -> str:
    if dest.startswith("/"):
        return dest.split("?", 1)[0]
    after = dest.split("://", 1)[-1]
    slash = after.find("/")
    return after[slash:].split("?", 1)[0] if slash >= 0 else "/"


async def _body(stream: DataStream, counts: list[int]) -> AsyncIterator[bytes]:
    while True:
        data = await stream.read(65536)
        if not data:
            return
        counts[0] += len(data)
        yield data


async def _pipe_both(stream: DataStream, up: OriginUpgrade) -> None:
    """Raw bytes both ways; the flow ends when either direction ends (as cloudflared)."""

    async def edge_to_origin() -> None:
        with contextlib.suppress(TransportError, OSError):  # a broken side ends the flow
            while data := await stream.read(65536):
                up.writer.write(data)
                await up.writer.drain()

    async def origin_to_edge() -> None:
        with contextlib.suppress(TransportError, OSError):
            while data := await up.reader.read(65536):
                await stream.write(data)

    try:
        async with asyncio.TaskGroup() as tg:
            pumps = [tg.create_task(edge_to_origin()), tg.create_task(origin_to_edge())]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in pumps:
                pump.cancel()
    finally:
        with contextlib.suppress(Exception):
            stream.write_eof()
