"""Talk to the local origin the way cloudflared does: proxy one eyeball request over HTTP/1.1.

Plain requests go over pooled keep-alive connections parsed by httptools (http1.py), streamed
both ways with no decompression and no headers the eyeball did not send besides the ones
cloudflared itself adds. WebSocket upgrades get a dedicated connection parsed with h11, so
that after a 101 the caller owns a raw byte pipe. Failures before a response head become
`OriginError`, whose text is what cloudflared puts into `ConnectResponse.error`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import h11

from nbtunnel.connector.http1 import Http1Connection, IdlePool, ResponseError
from nbtunnel.connector.origin_parts import (  # noqa: F401 - re-exported
    _DROP,
    _READ_CHUNK,
    _WS_DROP,
    MAX_UNCHUNKED_BODY,
    ORIGIN_UNREACHABLE,
    OriginError,
    _content_length,
    _dial_error,
    _Empty,
    _forward,
    _h11_headers,
    _H11Body,
    _head_bytes,
    _Http1Body,
    _parse_service,
    _path_qs,
    _read_limited,
    _request_fields,
    _response_error,
    _response_headers,
    _Target,
)
from nbtunnel.core.http1 import LAST_CHUNK, encode_chunk
from nbtunnel.core.httpmeta import HttpRequestHead


@dataclass(slots=True, eq=False)
class OriginResponse:
    """A response head plus its streamed body; call `aclose` once done (frees the connection).

    `headers` are the origin's, in order; for a chunked body Transfer-Encoding (and any
    Content-Length beside it) is left out, since `body` is de-chunked, as in Go's transport.
    """

    status: int
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes]

    async def aclose(self) -> None:
        aclose = getattr(self.body, "aclose", None)
        if aclose is not None:
            await aclose()


@dataclass(slots=True, eq=False)
class OriginUpgrade:
    """A 101 from the origin: the caller now owns the raw pipe and must close `writer`."""

    status: int
    headers: list[tuple[str, str]]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


class OriginClient:
    """Pooled HTTP/1.1 client towards origins; one per connector, closed with `aclose`."""

    def __init__(
        self,
        *,
        connector_id: str,
        connect_timeout: float = 30.0,
        keepalive_timeout: float = 90.0,
        max_connections: int = 0,
    ) -> None:
        self._connector_id = connector_id
        self._connect_timeout = connect_timeout
        self._keepalive_timeout = keepalive_timeout
        self._max_connections = max_connections
        self._targets: dict[str, _Target] = {}
        self._pool = IdlePool(keepalive_timeout)
        self._slots = asyncio.Semaphore(max_connections) if max_connections > 0 else None
        self._ssl: dict[bool, ssl.SSLContext] = {}
        self._closed = False
        self._tail = (f"Cf-Warp-Tag-Id: {connector_id}", "Connection: keep-alive")

    async def request(
        self,
        service: str,
        head: HttpRequestHead,
        body: AsyncIterator[bytes] | None,
        *,
        no_tls_verify: bool = False,
        http_host_header: str | None = None,
        connect_timeout: float | None = None,
        server_name: str | None = None,
        disable_chunked: bool = False,
    ) -> OriginResponse:
        """Send one request; `body` is streamed (None means no body at all).

        `connect_timeout`, `server_name` (TLS SNI) and `disable_chunked` are cloudflared's
        originRequest connectTimeout, originServerName and disableChunkedEncoding; the last
        one reads a body of unknown length first so it can be sent with a Content-Length
        (for WSGI servers that cannot read chunked bodies).
        """
        if self._closed:
            raise RuntimeError("OriginClient is closed")
        target = self._targets.get(service) or self._target(service)
        lines = _request_fields(head, _DROP, http_host_header)
        lines += self._tail
        payload = b""
        chunked = False
        method = head.method
        expected: int | None = None  # the body's declared length
        if body is not None:
            length = _content_length(head.headers)
            if length is not None:
                expected = int(length)
                lines.append(f"Content-Length: {length}")
            elif disable_chunked:
                payload = await _read_limited(body, MAX_UNCHUNKED_BODY)
                body = None
                lines.append(f"Content-Length: {len(payload)}")
            else:
                chunked = True
                lines.append("Transfer-Encoding: chunked")
        elif method in _BODY_METHODS:
            lines.append("Content-Length: 0")  # as Go's transport does
        raw = _head_bytes(method, _path_qs(head.dest), lines) + payload
        # pooled per service string (hashed in C; the target's dataclass hash is Python)
        key = (service, no_tls_verify, server_name)
        replayable = body is None and not payload and method in _REPLAYABLE
        timeout = self._connect_timeout if connect_timeout is None else connect_timeout
        if self._slots is not None:
            await self._slots.acquire()
        try:
            # Send on a pooled connection (or a new one) and wait for the head. A pooled
            # connection the origin closed meanwhile gets one retry when the request can be
            # replayed (no body, idempotent method), as in Go's transport.
            while True:
                conn = self._pool.take(key)
                if conn is None:
                    conn = await self._connect(target, key, timeout, no_tls_verify,
                                               server_name)
                waiting = conn.start(method == "HEAD")
                writer: asyncio.Future[None] | None = None
                try:
                    conn.write(raw)
                    if body is not None:
                        writer = asyncio.ensure_future(_send_body(conn, body, chunked, expected))
                    status, raw_headers = await waiting
                except ResponseError as exc:
                    conn.close()
                    await _stop(writer)
                    if conn.reused and not conn.got_bytes and replayable:
                        continue
                    raise _response_error(target, exc) from exc
                except BaseException:
                    conn.close()
                    await _stop(writer)
                    raise
                return OriginResponse(status, _response_headers(raw_headers, conn.chunked),
                                      _Http1Body(conn, writer, self._pool, self._slots))
        except BaseException:
            if self._slots is not None:
                self._slots.release()
            raise

    async def _connect(self, target: _Target, key: object, timeout: float,
                       no_tls_verify: bool, server_name: str | None) -> Http1Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                ctx = self._ssl_context(not no_tls_verify) if target.tls else None
                if target.unix_path is not None:
                    _, conn = await loop.create_unix_connection(
                        lambda: Http1Connection(key), target.unix_path, ssl=ctx,
                        server_hostname=(server_name or target.host) if ctx else None)
                else:
                    _, conn = await loop.create_connection(
                        lambda: Http1Connection(key), target.host, target.port, ssl=ctx,
                        server_hostname=(server_name or target.host) if ctx else None)
        except Exception as exc:
            raise _dial_error(target, exc) from exc
        return conn

    async def websocket(
        self,
        service: str,
        head: HttpRequestHead,
        *,
        no_tls_verify: bool = False,
        http_host_header: str | None = None,
    ) -> OriginUpgrade | OriginResponse:
        """Upgrade on a fresh connection; 101 gives a raw pipe, anything else a response."""
        target = self._target(service)
        headers = _forward(head, _WS_DROP, http_host_header)
        if not any(k.lower() == "sec-websocket-key" for k, _ in headers):
            headers.append(("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode()))
        headers += [("Cf-Warp-Tag-Id", self._connector_id), ("Connection", "Upgrade"),
                    ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")]
        reader, writer = await self._open(target, no_tls_verify)
        try:
            return await self._handshake(reader, writer, head, headers)
        except BaseException as exc:
            writer.close()
            if isinstance(exc, Exception) and not isinstance(exc, OriginError):
                raise _dial_error(target, exc) from exc
            raise

    async def aclose(self) -> None:
        """Close pooled connections; upgraded pipes and responses still being read belong
        to their callers."""
        self._closed = True
        self._pool.close()

    def _target(self, service: str) -> _Target:
        target = self._targets.get(service)
        if target is None:
            target = self._targets[service] = _parse_service(service)
        return target

    async def _handshake(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: HttpRequestHead,
        headers: list[tuple[str, str]],
    ) -> OriginUpgrade | OriginResponse:
        conn = h11.Connection(h11.CLIENT)
        raw = [(k.encode("latin-1"), v.encode("utf-8", "surrogateescape")) for k, v in headers]
        writer.write(conn.send(h11.Request(method=head.method, target=_path_qs(head.dest),
                                           headers=raw)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        while True:
            # Read exactly one head so that any bytes after a 101 stay in `reader`.
            conn.receive_data(await reader.readuntil(b"\r\n\r\n"))
            event = conn.next_event()
            if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                return OriginUpgrade(101, _h11_headers(event), reader, writer)
            if isinstance(event, h11.Response):
                return OriginResponse(event.status_code, _h11_headers(event),
                                      _H11Body(conn, reader, writer))
            if not isinstance(event, h11.InformationalResponse):  # 1xx: wait for the next head
                raise OriginError(f"malformed HTTP response: unexpected {event!r}")

    async def _open(
        self, target: _Target, no_tls_verify: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        ctx = self._ssl_context(not no_tls_verify) if target.tls else None
        try:
            async with asyncio.timeout(self._connect_timeout):
                if target.unix_path is not None:
                    return await asyncio.open_unix_connection(
                        target.unix_path, ssl=ctx, server_hostname=target.host if ctx else None)
                return await asyncio.open_connection(
                    target.host, target.port, ssl=ctx,
                    server_hostname=target.host if ctx else None)
        except Exception as exc:
            raise _dial_error(target, exc) from exc

    def _ssl_context(self, verify: bool) -> ssl.SSLContext:
        ctx = self._ssl.get(verify)
        if ctx is None:
            ctx = self._ssl[verify] = ssl.create_default_context()
            if not verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        return ctx


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_REPLAYABLE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


async def _send_body(conn: Http1Connection, body: AsyncIterator[bytes], chunked: bool,
                     length: int | None = None) -> None:
    """Stream the request body (its own task: the origin may answer before reading it all).
    A failure ends the exchange: the connection is failed, so the waiting head gets it.

    A body sent with a Content-Length must be exactly that long, as Go's transport insists:
    a byte past it would be read by the origin as the start of another request on this
    connection, and a body that ends short leaves the origin waiting for the rest.
    """
    sent = 0
    try:
        async for chunk in body:
            if not chunk:
                continue
            if length is not None:
                sent += len(chunk)
                if sent > length:
                    raise _framing(conn, f"the request body ran past its Content-Length of "
                                         f"{length} bytes")
            conn.write(encode_chunk(chunk) if chunked else chunk)
            await conn.drain()
        if chunked:
            conn.write(LAST_CHUNK)
        elif length is not None and sent < length:
            raise _framing(conn, f"the request body ended after {sent} of its Content-Length "
                                 f"of {length} bytes")
    except ResponseError:
        raise
    except Exception as exc:
        conn.fail(ResponseError("io", f"writing the request body: {exc}", exc))
        raise


def _framing(conn: Http1Connection, detail: str) -> ResponseError:
    """Fail ``conn`` (never reused: the origin's idea of where the request ends is off)."""
    error = ResponseError("body", detail)
    conn.fail(error)
    return error


async def _stop(task: asyncio.Future[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
    if task is not None:
        await asyncio.gather(task, return_exceptions=True)


async def http_status_response(code: int) -> OriginResponse:
    """The answer of an `http_status:NNN` service: that status, no headers, empty body."""
    return OriginResponse(code, [], _Empty())

