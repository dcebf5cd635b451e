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

from nbtunnel.connector.events import RequestEvent
from nbtunnel.connector.ingress import Ingress, OriginRequest
from nbtunnel.connector.origin import (
    OriginClient,
    OriginError,
    OriginResponse,
    OriginUpgrade,
    http_status_response,
)
from nbtunnel.connector.origin_guard import GuardedOrigin
from nbtunnel.connector.stream_origin import (
    Flow,
    StreamOriginError,
    StreamOrigins,
    is_stream_service,
)
from nbtunnel.core.errors import ProtocolError
from nbtunnel.core.http1 import end_to_end
from nbtunnel.core.httpmeta import (
    HttpRequestHead,
    build_connect_response,
    error_connect_response,
    parse_http_request,
    request_has_body,
)
from nbtunnel.core.streams import ConnectionType, ConnectRequest
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

    async def handle(self, stream: DataStream, conn_index: int, on_config: ConfigHandler) -> None:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                head = await stream.receive_request()
        except (ProtocolError, TimeoutError) as exc:
            log.warning("resetting stream with a bad head: %s", exc or "timeout")
            with contextlib.suppress(Exception):
                stream.reset(0)
            return
        if head is None:
            return  # the edge ended the stream before sending a head
        if not isinstance(head, ConnectRequest):
            await head.serve(on_config)  # a remote configuration
            return
        await self._data_stream(stream, head, conn_index)

    async def _data_stream(self, stream: DataStream, req: ConnectRequest, conn_index: int) -> None:
        started = time.monotonic()
        method, path, status, error = "?", "?", 0, ""
        counts = [0, 0]  # bytes in (request body), bytes out (response body)
        flow = Flow()
        try:
            if req.type == ConnectionType.TCP:
                method, path = "TCP", req.dest
                await self.streams.tcp(stream, req, self.ingress().warp_routing, flow)
                return
            head = parse_http_request(req)
            method, path = head.method, _path_of(head.dest)
            if head.host.split(":")[0].rstrip(".").lower() == MANAGEMENT_HOSTNAME:
                _, rule = _MANAGEMENT.match(head.host, path)
            else:
                _, rule = self.ingress().match(head.host, path)
            service = self.services(rule.service)
            if is_stream_service(service):
                status = await self.streams.carrier(stream, head, service,
                                                    rule.origin.connect_timeout, flow)
            elif head.websocket:
                status = await self._websocket(stream, head, service, rule.origin)
            else:
                status = await self._http(stream, head, service, counts, rule.origin)
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
                self.emit(RequestEvent(conn_index, method, path, status,
                                       time.monotonic() - started, counts[0] + flow.bytes_in,
                                       counts[1] + flow.bytes_out, error))

    async def _http(
        self, stream: DataStream, head: HttpRequestHead, service: str, counts: list[int],
        opts: OriginRequest,
    ) -> int:
        async with _abandon_when_edge_stops(stream):
            return await self._http_exchange(stream, head, service, counts, opts)

    async def _http_exchange(
        self, stream: DataStream, head: HttpRequestHead, service: str, counts: list[int],
        opts: OriginRequest,
    ) -> int:
        body = _body(stream, counts) if request_has_body(head.headers) else None
        if service.startswith("http_status:"):
            resp: OriginResponse = await http_status_response(int(service.split(":", 1)[1]))
        else:
            resp = await self.origin.request(service, head, body,
                                             no_tls_verify=opts.no_tls_verify,
                                             http_host_header=opts.http_host_header,
                                             connect_timeout=opts.connect_timeout,
                                             server_name=opts.origin_server_name,
                                             disable_chunked=opts.disable_chunked_encoding)
        try:
            headers = end_to_end(resp.headers)
            await stream.send_response(build_connect_response(resp.status, headers))
            async for chunk in resp.body:
                counts[1] += len(chunk)
                await stream.write(chunk)
            stream.write_eof()
        finally:
            await resp.aclose()
        return resp.status

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
            return await self._relay_plain(stream, result)
        up: OriginUpgrade = result
        await stream.send_response(build_connect_response(up.status, up.headers))
        try:
            await _pipe_both(stream, up)
        finally:
            up.writer.close()
        return up.status

    async def _relay_plain(self, stream: DataStream, resp: OriginResponse) -> int:
        try:
            headers = end_to_end(resp.headers)
            await stream.send_response(build_connect_response(resp.status, headers))
            async for chunk in resp.body:
                await stream.write(chunk)
            stream.write_eof()
        finally:
            await resp.aclose()
        return resp.status


class _abandon_when_edge_stops:
    """Cancel the exchange when the edge sends STOP_SENDING (its client went away), so a
    silent origin response does not hold the origin connection forever. A done-callback on
    the stream's stop future, not a watcher task: this wraps every request."""

    __slots__ = ("_fired", "_stopped", "_task")

    def __init__(self, stream: DataStream) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._fired = False
        self._stopped = stream.peer_stopped()

    def _fire(self, done: asyncio.Future[None]) -> None:
        if not done.cancelled():
            self._fired = True
            self._task.cancel()

    async def __aenter__(self) -> None:
        self._stopped.add_done_callback(self._fire)

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> None:
        self._stopped.remove_done_callback(self._fire)
        if kind is not None and issubclass(kind, asyncio.CancelledError):
            if self._fired and self._task.uncancel() == 0:
                raise StreamResetError(0, "the edge abandoned the request") from None


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
