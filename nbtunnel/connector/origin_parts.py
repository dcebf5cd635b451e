"""Pieces of the origin client: errors, targets, body adapters, header helpers.

Kept apart from origin.py so that the client itself reads in one screen.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
import h11
from yarl import URL

from nbtunnel.connector.http1 import Http1Connection, IdlePool, ResponseError
from nbtunnel.core.errors import NbtunnelError
from nbtunnel.core.http1 import HOP_BY_HOP
from nbtunnel.core.httpmeta import HttpRequestHead

ORIGIN_UNREACHABLE = (
    "Unable to reach the origin service. The service may be down or it may not be responding"
    " to traffic from cloudflared"
)
# Request headers never forwarded as-is: hop-by-hop ones, those we compute, those we replace.
_DROP = HOP_BY_HOP | {
    "host", "content-length", "cf-warp-tag-id", "cf-trace-id",
    "cf-cloudflared-proxy-connection-upgrade",
}
_WS_DROP = _DROP | {"sec-websocket-version"}
_READ_CHUNK = 65536


class OriginError(NbtunnelError):
    """The origin could not produce a response head; `cause` reads like Go's net error."""

    def __init__(self, cause: str) -> None:
        super().__init__(f"{ORIGIN_UNREACHABLE}: {cause}")
        self.cause = cause

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


class _Http1Body:
    """Chunks of a response as they arrive; the connection goes back to the pool once the
    body was read to its end, else it is closed (`aclose`)."""

    __slots__ = ("_conn", "_done", "_pool", "_slots", "_writer")

    def __init__(self, conn: Http1Connection, writer: asyncio.Future[None] | None,
                 pool: IdlePool, slots: asyncio.Semaphore | None) -> None:
        self._conn = conn
        self._writer = writer
        self._pool = pool
        self._slots = slots
        self._done = False

    def __aiter__(self) -> _Http1Body:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        try:
            data = await self._conn.read()
        except ResponseError as exc:
            await self.aclose()
            raise OriginError(f"reading the response body: {exc}") from exc
        if data:
            return data
        writer = self._writer
        reusable = self._conn.keep_alive and not self._conn.closed and (
            writer is None or (writer.done() and not writer.cancelled()
                               and writer.exception() is None))
        if reusable:
            self._release()
            self._pool.put(self._conn)
        else:
            await self.aclose()
        raise StopAsyncIteration

    def ready(self) -> bytes | None:
        """What ``__anext__`` gives without waiting: the buffered body, b"" at its end (the
        connection is back in the pool), None when it would wait or has more to do."""
        if self._done:
            return b""
        conn = self._conn
        data = conn.read_nowait()
        if data is None or data:
            return data
        if self._writer is None and conn.keep_alive and not conn.closed:
            self._release()
            self._pool.put(conn)
            return b""
        return None  # __anext__ decides (a request body still being sent, a closed connection)

    @property
    def finished(self) -> bool:
        """Read to its end and released: `aclose` has nothing left to do."""
        return self._done and self._writer is None

    async def aclose(self) -> None:
        if not self._done:
            self._conn.close()  # body not read to its end: the connection cannot be reused
            self._release()
        writer, self._writer = self._writer, None
        if writer is not None:
            if not writer.done():
                writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    def _release(self) -> None:
        self._done = True
        if self._slots is not None:
            self._slots.release()


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
    if service.startswith("unix+tls:"):  # HTTPS over the socket (SNI localhost by default)
        return _Target("https://localhost", "localhost", 443, True, service[len("unix+tls:"):])
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
    """Eyeball headers in order, minus hop-by-hop ones, behind the Host cloudflared sends.

    With httpHostHeader, an Origin or Referer naming the public hostname is rewritten to name
    that Host too: the request stays same-origin for the origin server (Jupyter, for one,
    refuses a WebSocket whose Origin does not match its Host). Other origins are left alone.
    """
    named = {t.strip().lower() for k, v in head.headers if k.lower() == "connection"
             for t in v.split(",")}
    host = http_host_header or head.host
    out = [("Host", host)]
    out += [(k, v) for k, v in head.headers if (lk := k.lower()) not in drop and lk not in named]
    if http_host_header:
        out = [(k, _same_origin(v, head.host, http_host_header))
               if k.lower() in ("origin", "referer") else (k, v) for k, v in out]
        out.append(("X-Forwarded-Host", head.host))
    return out


def _same_origin(value: str, public_host: str, host: str) -> str:
    """`scheme://public_host/...` -> `scheme://host/...`; anything else unchanged."""
    scheme, sep, rest = value.partition("://")
    netloc, slash, path = rest.partition("/")
    if not sep or netloc.lower() != public_host.lower():
        return value
    return f"{scheme}://{host}{slash}{path}"


def _content_length(headers: Iterable[tuple[str, str]]) -> str | None:
    for k, v in headers:
        if k.lower() == "content-length":
            v = v.strip()
            return v if v.isascii() and v.isdigit() else None  # "²".isdigit() too
    return None


def _path_qs(dest: str) -> str:
    """The path?query of an absolute ("https://host/p?q") or origin-form ("/p?q") dest."""
    if dest[:1] != "/":
        start = dest.find("://")
        rest = dest[start + 3:] if start >= 0 else dest
        slash = rest.find("/")
        query = rest.find("?")
        if query >= 0 and (slash < 0 or query < slash):
            slash = query
        dest = rest[slash:] if slash >= 0 else ""
        if dest[:1] != "/":
            dest = "/" + dest
    return dest.partition("#")[0] if "#" in dest else dest


def _response_headers(raw: Iterable[tuple[bytes, bytes]],
                      chunked: bool) -> list[tuple[str, str]]:
    """The origin's fields as text. A de-chunked body (``chunked``) loses Transfer-Encoding
    and any Content-Length beside it: the framing is already undone and a Content-Length
    next to chunked is ignored, as in Go."""
    headers = [(k.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for k, v in raw]
    if chunked:
        headers = [h for h in headers if h[0].lower() not in ("transfer-encoding",
                                                               "content-length")]
    return headers


def _request_fields(head: HttpRequestHead, drop: frozenset[str],
                    http_host_header: str | None) -> list[str]:
    """The ``Name: value`` lines :func:`_forward` gives, built in one pass when the eyeball
    sent no Connection header and no Host override applies (the usual request)."""
    if http_host_header:
        return [f"{k}: {v}" for k, v in _forward(head, drop, http_host_header)]
    lines = [f"Host: {head.host}"]
    for k, v in head.headers:
        lk = k.lower()
        if lk in drop:
            if lk == "connection":  # it may nominate more fields to drop
                return [f"{k}: {v}" for k, v in _forward(head, drop, http_host_header)]
            continue
        lines.append(f"{k}: {v}")
    return lines


def _head_bytes(method: str, target: str, lines: list[str]) -> bytes:
    """Request line and the ``Name: value`` lines. A CR or LF inside a field (which HTTP/1.1
    cannot carry) is refused, as aiohttp did: it would let the edge's metadata inject
    lines."""
    fields = "\r\n".join(lines)
    line = f"{method} {target} HTTP/1.1"
    n = len(lines) - 1
    if (fields.count("\n") != n or fields.count("\r") != n
            or "\r" in line or "\n" in line or " " in target or " " in method):
        raise OriginError("invalid request: a line break or space inside the request line "
                          "or a header")
    return f"{line}\r\n{fields}\r\n\r\n".encode("utf-8", "surrogateescape")


def _response_error(target: _Target, exc: ResponseError) -> OriginError:
    """A broken answer phrased like Go's transport: EOF, malformed response, read error."""
    if exc.kind == "eof":
        return OriginError("EOF")
    if exc.kind == "malformed":
        return OriginError(f"malformed HTTP response: {exc}")
    cause = exc.cause
    if isinstance(cause, OSError) and cause.errno is not None:
        return OriginError(f"{target.dial}: read: {os.strerror(cause.errno).lower()}")
    return OriginError(f"{target.dial}: {exc}")


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
