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
import socket
import ssl
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import h11
from yarl import URL

from nbtunnel.core.errors import NbtunnelError
from nbtunnel.core.httpmeta import HttpRequestHead

ORIGIN_UNREACHABLE = (
    "Unable to reach the origin service. The service may be down or it may not be responding"
    " to traffic from cloudflared"
)
# Request headers never forwarded as-is: hop-by-hop ones, those we compute, those we replace.
_DROP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "host", "content-length", "cf-warp-tag-id", "cf-trace-id",
    "cf-cloudflared-proxy-connection-upgrade",
})
_WS_DROP = _DROP | {"sec-websocket-version"}
# aiohttp would invent these. (Go adds Accept-Encoding and then gunzips; we pass bodies as-is.)
_SKIP_AUTO = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
_READ_CHUNK = 65536


class OriginError(NbtunnelError):
    """The origin could not produce a response head; `cause` reads like Go's net error."""

    def __init__(self, cause: str) -> None:
        super().__init__(f"{ORIGIN_UNREACHABLE}: {cause}")
        self.cause = cause


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


@dataclass(frozen=True, slots=True)
class _Target:
    base: str  # scheme://host:port for aiohttp (a dummy host for unix sockets)
    host: str
    port: int
    tls: bool
    unix_path: str | None

    @property
    def dial(self) -> str:
        if self.unix_path is not None:
            return f"dial unix {self.unix_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"dial tcp {host}:{self.port}"


MAX_UNCHUNKED_BODY = 64 * 1024 * 1024


async def _read_limited(body: AsyncIterator[bytes], limit: int) -> bytes:
    buf = bytearray()
    async for chunk in body:
        buf += chunk
        if len(buf) > limit:
            raise OriginError(f"request body over {limit} bytes with disableChunkedEncoding")
    return bytes(buf)


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


class _Body:
    """Chunks of an aiohttp response as they arrive; returns the connection when drained."""

    __slots__ = ("_done", "_resp")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self._done = False

    def __aiter__(self) -> _Body:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        try:
            data = await self._resp.content.readany()
        except Exception as exc:
            await self.aclose()
            raise OriginError(f"reading the response body: {exc or type(exc).__name__}") from exc
        if not data:
            self._done = True
            self._resp.release()
            raise StopAsyncIteration
        return data

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._resp.close()  # body not drained: the connection cannot be reused


class _H11Body:
    """Body of a non-101 answer to an upgrade, parsed by h11 on the dedicated connection."""

    def __init__(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._conn, self._reader, self._writer = conn, reader, writer

    def __aiter__(self) -> _H11Body:
        return self

    async def __anext__(self) -> bytes:
        while not self._writer.is_closing():
            try:
                event = self._conn.next_event()
                if event is h11.NEED_DATA:
                    self._conn.receive_data(await self._reader.read(_READ_CHUNK))
                    continue
            except (h11.RemoteProtocolError, OSError) as exc:
                await self.aclose()
                raise OriginError(f"reading the response body: {exc}") from exc
            if isinstance(event, h11.Data):
                return bytes(event.data)
            if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        await self.aclose()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._writer.close()


class _Empty:
    def __aiter__(self) -> _Empty:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration


def _parse_service(service: str) -> _Target:
    if service.startswith("unix:"):
        return _Target("http://localhost", "localhost", 80, False, service[len("unix:"):])
    url = URL(service)
    scheme = {"ws": "http", "wss": "https"}.get(url.scheme, url.scheme)
    if scheme not in ("http", "https") or not url.host:
        raise ValueError(f"unsupported origin service {service!r}")
    port = url.port or (443 if scheme == "https" else 80)
    host = f"[{url.host}]" if ":" in url.host else url.host
    return _Target(f"{scheme}://{host}:{port}", url.host, port, scheme == "https", None)


def _forward(
    head: HttpRequestHead, drop: frozenset[str], http_host_header: str | None
) -> list[tuple[str, str]]:
    """Eyeball headers in order, minus hop-by-hop ones, behind the Host cloudflared sends."""
    named = {t.strip().lower() for k, v in head.headers if k.lower() == "connection"
             for t in v.split(",")}
    host = http_host_header or head.host
    out = [("Host", host)]
    out += [(k, v) for k, v in head.headers if (lk := k.lower()) not in drop and lk not in named]
    if http_host_header:
        out.append(("X-Forwarded-Host", head.host))
    return out


def _content_length(headers: Iterable[tuple[str, str]]) -> str | None:
    for k, v in headers:
        if k.lower() == "content-length":
            return v.strip() if v.strip().isdigit() else None
    return None


def _path_qs(dest: str) -> str:
    """The path?query of an absolute ("https://host/p?q") or origin-form ("/p?q") dest."""
    if not dest.startswith("/"):
        start = dest.find("://")
        rest = dest[start + 3:] if start >= 0 else dest
        cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        dest = rest[cut:]
        if not dest.startswith("/"):
            dest = "/" + dest
    return dest.split("#", 1)[0]


def _response_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    headers = [(k.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for k, v in raw]
    if any(k.lower() == "transfer-encoding" for k, _ in headers):
        # Framing already undone; a Content-Length next to chunked is ignored, as in Go.
        headers = [h for h in headers if h[0].lower() not in ("transfer-encoding",
                                                               "content-length")]
    return headers


def _h11_headers(event: h11.Response | h11.InformationalResponse) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("utf-8", "surrogateescape"))
            for k, v in event.headers.raw_items()]


def _dial_error(target: _Target, exc: BaseException) -> OriginError:
    """Phrase a connect/send failure the way Go's net/http would, for cloudflared parity."""
    cause: Any = exc
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cause = exc.certificate_error
    elif isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error
    if isinstance(cause, ssl.SSLCertVerificationError):
        return OriginError(f"tls: failed to verify certificate: {cause.verify_message}")
    if isinstance(cause, ssl.SSLError | ssl.CertificateError):
        return OriginError(f"tls: {getattr(cause, 'reason', None) or cause}")
    if isinstance(cause, socket.gaierror) or isinstance(exc, aiohttp.ClientConnectorDNSError):
        return OriginError(f"dial tcp: lookup {target.host}: no such host")
    if isinstance(cause, TimeoutError):
        return OriginError(f"{target.dial}: i/o timeout")
    if isinstance(exc, aiohttp.ServerDisconnectedError | asyncio.IncompleteReadError):
        return OriginError("EOF")
    if isinstance(exc, aiohttp.ClientResponseError | h11.ProtocolError | asyncio.LimitOverrunError):
        return OriginError(f"malformed HTTP response: {getattr(exc, 'message', exc)}")
    if isinstance(cause, OSError) and cause.errno is not None:
        connecting = isinstance(exc, aiohttp.ClientConnectorError | ConnectionError)
        op = "connect" if connecting else "read"
        return OriginError(f"{target.dial}: {op}: {os.strerror(cause.errno).lower()}")
    text = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
    return OriginError(f"{target.dial}: {text}")
