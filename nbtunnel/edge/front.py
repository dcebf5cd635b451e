"""The public HTTP/1.1 front: routes eyeball requests by Host to a tunnel's data streams.

One asyncio task per client connection parses requests with httptools (llhttp) and handles them
in order. Each proxied request gets its own QUIC data stream on one of the tunnel's registered
connections (round-robin). Bodies stream both ways: the request body is written to the stream
as it is parsed (the client is not read faster than the stream accepts), and the response body
is written to the client as it arrives, with `drain()` as back-pressure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, cast

import httptools

from nbtunnel.edge.handler import RequestHandler
from nbtunnel.edge.pages import error_page, reason, wants_html
from nbtunnel.edge.registry import LiveConnection, Registry
from nbtunnel.edge.stores.base import ControlStore

log = logging.getLogger("nbtunnel.edge.front")

Headers = list[tuple[bytes, bytes]]
ApiHandler = Callable[["Request", bytes], Awaitable[tuple[int, Headers, bytes]]]


class RemoteRouter(Protocol):
    """Connections of a tunnel through another edge (`peering.PeerClient`)."""

    async def pick(self, tunnel_id: uuid.UUID) -> LiveConnection | None: ...

    def pick_cached(self, tunnel_id: uuid.UUID,
                    exclude: LiveConnection | None = None) -> LiveConnection | None: ...

MAX_HEADER_BYTES = 64 * 1024
HEADER_TIMEOUT = 30.0
KEEPALIVE_TIMEOUT = 75.0


@dataclass
class Request:
    """A parsed request head as the front sees it."""

    method: str
    target: str
    host: str
    headers: Headers
    version: str
    keep_alive: bool
    upgrade: bool
    client_ip: str
    ray: str
    body_expected: bool = True
    scheme: str = "http"  # what the client spoke to us: "https" on the HTTPS front


@dataclass
class _Collector:
    """httptools callback target: turns parser callbacks into a list of events."""

    events: list[tuple[str, object]] = field(default_factory=list)
    url: bytes = b""
    headers: Headers = field(default_factory=list)
    head_bytes: int = 0
    too_large: bool = False

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self._count(len(name) + len(value) + 4)

    def _count(self, n: int) -> None:
        self.head_bytes += n
        if self.head_bytes > MAX_HEADER_BYTES:
            self.too_large = True

    def on_headers_complete(self) -> None:
        self.events.append(("head", (self.url, self.headers)))

    def on_body(self, body: bytes) -> None:
        self.events.append(("body", body))

    def on_message_complete(self) -> None:
        self.events.append(("end", None))


def _host_of(headers: Headers) -> str:
    for name, value in headers:
        if name.lower() == b"host":
            return value.decode("latin-1").strip()
    return ""


class PublicFront:
    """HTTP/1.1 listener that maps hostnames to tunnels and proxies through data streams."""

    def __init__(
        self,
        store: ControlStore,
        registry: Registry,
        *,
        location: str = "LOC",
        api: ApiHandler | None = None,
        api_hosts: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        self.registry = registry
        self.location = location
        self.api = api
        self.api_hosts = api_hosts
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.requests_total = 0
        self.remote: RemoteRouter | None = None  # set when other edges can serve a tunnel
        # set by the HTTPS front with --https-redirect: Location for a plain-HTTP request
        self.https_redirect: Callable[[Request], str | None] | None = None
        self.statuses: dict[int, int] = {}  # answered requests by status (edge/metrics.py)

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        self._server = await asyncio.start_server(self._on_client, host, port, limit=2**16,
                                                  reuse_port=reuse_port or None)

    @property
    def sockname(self) -> tuple[str, int]:
        assert self._server is not None
        name = self._server.sockets[0].getsockname()
        return name[0], name[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.serve(reader, writer)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    scheme: str = "http") -> None:
        """Serve one HTTP/1.1 client connection (also the HTTPS front's, after TLS)."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # owned: close() cancels and awaits every client task
        try:
            await self._serve_client(reader, writer, scheme)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # close() cancelled us; end quietly (asyncio's server reads our result)
        except Exception:  # one broken client must never take the front down
            log.exception("client connection failed")
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, scheme: str = "http"
    ) -> None:
        peer = writer.get_extra_info("peername")
        client_ip = peer[0] if peer else ""
        col = _Collector()
        parser = httptools.HttpRequestParser(col)
        handler: RequestHandler | None = None
        idle = True
        carry = b""  # bytes the client sent while we waited for a response
        while True:
            timeout = KEEPALIVE_TIMEOUT if idle else HEADER_TIMEOUT
            try:
                if carry:
                    data, carry = carry, b""
                elif handler is None:
                    data = await asyncio.wait_for(reader.read(65536), timeout)
                else:
                    data = await reader.read(65536)
            except ConnectionError:
                data = b""  # a reset client is a client gone: abort its exchange below
            except TimeoutError:
                if not idle:
                    await self._simple(writer, 408, "The request head took too long.", [])
                return
            if not data:
                if handler is not None:
                    await handler.client_gone()
                return
            upgrade_rest: bytes | None = None
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                upgrade_rest = data[exc.args[0] :]
            except httptools.HttpParserError as exc:
                if col.too_large:
                    await self._simple(writer, 431, "The request head is too large.", [])
                else:
                    await self._simple(writer, 400, f"Malformed request: {exc}", [])
                return
            if col.too_large:
                await self._simple(writer, 431, "The request head is too large.", [])
                return
            idle = False
            events, col.events = col.events, []
            for kind, value in events:
                if kind == "head":
                    url, headers = cast(tuple[bytes, Headers], value)
                    req = self._request(parser, url, headers, client_ip)
                    req.scheme = scheme
                    handler = RequestHandler(self, req, writer)
                    await handler.begin()
                elif kind == "body":
                    assert handler is not None
                    await handler.body(value)  # type: ignore[arg-type]
                else:
                    assert handler is not None
                    if upgrade_rest is not None and handler.req.upgrade:
                        await handler.run_upgraded(reader, upgrade_rest)
                        return
                    keep, early = await self._finish_watching_client(handler, reader)
                    if early is None:
                        return  # the client went away; the exchange was aborted
                    carry += early
                    handler = None
                    idle = True
                    if not keep:
                        return

    async def _finish_watching_client(
        self, handler: RequestHandler, reader: asyncio.StreamReader
    ) -> tuple[bool, bytes | None]:
        """Wait for the response while watching the client socket: if the client hangs up
        (e.g. during a silent long-poll) the exchange is aborted at once, which resets the data
        stream so the connector releases the origin. Returns (keep-alive, bytes the client
        sent meanwhile), or (False, None) when the client went away."""
        if handler.exchange is None or reader.at_eof():
            return await handler.finish(), b""
        task = asyncio.current_task()
        assert task is not None
        gone = False

        def on_read(done: asyncio.Future[bytes]) -> None:
            nonlocal gone
            if not done.cancelled() and (done.exception() is not None or not done.result()):
                gone = True
                task.cancel()

        watcher = asyncio.ensure_future(reader.read(65536))
        watcher.add_done_callback(on_read)
        try:
            keep = await handler.finish()
        except asyncio.CancelledError:
            if gone and task.uncancel() == 0:
                await handler.client_gone()
                return False, None
            raise
        finally:
            watcher.remove_done_callback(on_read)
            if not watcher.done():
                watcher.cancel()
                await asyncio.wait([watcher])  # our own cancellation still propagates
        if watcher.cancelled():
            return keep, b""  # we stopped watching: the client sent nothing meanwhile
        if watcher.exception() is not None:
            return False, b""
        data = watcher.result()
        return (keep, data) if data else (False, b"")

    def _request(
        self, parser: httptools.HttpRequestParser, url: bytes, headers: Headers, client_ip: str
    ) -> Request:
        self.requests_total += 1
        upgrade = bool(parser.should_upgrade()) and any(
            n.lower() == b"upgrade" and v.lower() == b"websocket" for n, v in headers
        )
        return Request(
            method=parser.get_method().decode("latin-1"),
            target=url.decode("latin-1"),
            host=_host_of(headers),
            headers=headers,
            version=parser.get_http_version(),
            keep_alive=bool(parser.should_keep_alive()),
            upgrade=upgrade,
            client_ip=client_ip,
            ray=f"{secrets.token_hex(8)}-{self.location}",
        )

    def count(self, status: int) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1

    async def _simple(
        self, writer: asyncio.StreamWriter, status: int, detail: str, headers: Headers
    ) -> None:
        self.count(status)
        ray = f"{secrets.token_hex(8)}-{self.location}"
        ctype, body = error_page(status, detail, ray=ray, as_html=wants_html(headers))
        writer.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            b"Connection: close\r\nCf-Ray: %s\r\n\r\n%s"
            % (status, reason(status).encode(), ctype, len(body), ray.encode(), body)
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
