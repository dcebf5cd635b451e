"""Talk to the local origin the way cloudflared does: proxy one eyeball request over HTTP/1.1.

Plain requests go through one pooled aiohttp session (C parser, keep-alive), streamed both
ways with no decompression and no headers the eyeball did not send besides the ones
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
from typing import Any

import aiohttp
import h11
from yarl import URL

from nbtunnel.connector.origin_parts import (  # noqa: F401 - re-exported
    _DROP,
    _READ_CHUNK,
    _SKIP_AUTO,
    _WS_DROP,
    MAX_UNCHUNKED_BODY,
    ORIGIN_UNREACHABLE,
    OriginError,
    _Body,
    _content_length,
    _dial_error,
    _Empty,
    _forward,
    _h11_headers,
    _H11Body,
    _parse_service,
    _path_qs,
    _read_limited,
    _response_headers,
    _Target,
)
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
        self._sessions: dict[str | None, aiohttp.ClientSession] = {}
        self._ssl: dict[bool, ssl.SSLContext] = {}
        self._closed = False

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
        target = self._target(service)
        headers = _forward(head, _DROP, http_host_header)
        headers.append(("Cf-Warp-Tag-Id", self._connector_id))
        headers.append(("Connection", "keep-alive"))
        data: AsyncIterator[bytes] | bytes | None = body
        if body is not None:
            length = _content_length(head.headers)
            if length is not None:
                headers.append(("Content-Length", length))
            elif disable_chunked:
                data = await _read_limited(body, MAX_UNCHUNKED_BODY)
                headers.append(("Content-Length", str(len(data))))
        url = URL(target.base + _path_qs(head.dest), encoded=True)
        session = self._session(target.unix_path)
        extra: dict[str, Any] = {}
        if connect_timeout is not None:
            extra["timeout"] = aiohttp.ClientTimeout(
                total=None, connect=connect_timeout, sock_connect=connect_timeout,
                sock_read=None)
        if server_name:
            extra["server_hostname"] = server_name
        try:
            resp = await session.request(
                head.method, url, headers=headers, data=data, allow_redirects=False,
                ssl=not no_tls_verify, **extra,
            )
        except Exception as exc:
            raise _dial_error(target, exc) from exc
        return OriginResponse(resp.status, _response_headers(resp.raw_headers), _Body(resp))

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
        """Close pooled connections; upgraded pipes belong to their callers."""
        self._closed = True
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    def _target(self, service: str) -> _Target:
        target = self._targets.get(service)
        if target is None:
            target = self._targets[service] = _parse_service(service)
        return target

    def _session(self, unix_path: str | None) -> aiohttp.ClientSession:
        session = self._sessions.get(unix_path)
        if session is None:
            if self._closed:
                raise RuntimeError("OriginClient is closed")
            connector: aiohttp.BaseConnector
            limit = self._max_connections
            if unix_path is None:
                connector = aiohttp.TCPConnector(limit=limit, ttl_dns_cache=60,
                                                 keepalive_timeout=self._keepalive_timeout)
            else:
                connector = aiohttp.UnixConnector(unix_path, limit=limit,
                                                  keepalive_timeout=self._keepalive_timeout)
            session = self._sessions[unix_path] = aiohttp.ClientSession(
                connector=connector,
                # A real jar would replay one eyeball's cookies to the next one.
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=_SKIP_AUTO,
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
                max_line_size=65536,
                max_field_size=65536,
            )
        return session

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
                    return await asyncio.open_unix_connection(target.unix_path)
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


async def http_status_response(code: int) -> OriginResponse:
    """The answer of an `http_status:NNN` service: that status, no headers, empty body."""
    return OriginResponse(code, [], _Empty())

