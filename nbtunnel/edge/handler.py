"""What one request on a public-front connection becomes: an edge page, an API call, or a
tunnel exchange over a data stream (see exchange.py)."""

from __future__ import annotations

import asyncio
import uuid
from functools import partial
from typing import TYPE_CHECKING

from nbtunnel.core.http1 import encode_head, strip_port
from nbtunnel.edge.exchange import Exchange, ExchangeError, HeadTooLargeError, Repick
from nbtunnel.edge.pages import wants_html
from nbtunnel.edge.registry import LiveConnection
from nbtunnel.edge.response_writer import ResponseWriter

if TYPE_CHECKING:
    from nbtunnel.edge.deadline import Deadline
    from nbtunnel.edge.front import PublicFront, Request
    from nbtunnel.edge.listener import ClientReader

MAX_API_BODY = 1024 * 1024


async def pick_live(front: PublicFront, tunnel_id: uuid.UUID) -> LiveConnection | None:
    """A connection of the tunnel: ours, else through another edge of the deployment."""
    live = front.registry.pick(tunnel_id)
    if live is None and front.remote is not None:
        live = await front.remote.pick(tunnel_id)
    return live


async def _repick(front: PublicFront, tunnel_id: uuid.UUID,
                  failed: LiveConnection) -> LiveConnection | None:
    other = front.registry.pick(tunnel_id, exclude=failed)
    remote = front.remote
    if other is None and remote is not None:
        other = remote.pick_cached(tunnel_id, failed)
        if other is None:  # nothing cached: ask presence (a draining edge is left out)
            other = await remote.pick(tunnel_id)
    return other


def repicker(front: PublicFront, tunnel_id: uuid.UUID) -> Repick:
    """Another connection of the tunnel for a retry, excluding the one that failed."""
    return partial(_repick, front, tunnel_id)


class RequestHandler:
    """One request on a client connection: an edge page, an API call, or a tunnel exchange."""

    __slots__ = ("api_body", "exchange", "front", "local", "out", "redirect", "req", "writer")

    def __init__(self, front: PublicFront, req: Request, writer: asyncio.StreamWriter,
                 deadline: Deadline | None = None) -> None:
        self.front = front
        self.req = req
        self.writer = writer
        self.out = ResponseWriter(writer, ray=req.ray, method=req.method, version=req.version,
                                  keep_alive=req.keep_alive, deadline=deadline,
                                  send_timeout=front.limits.send_timeout, batch=front.batch)
        self.exchange: Exchange | None = None
        self.local: tuple[int, str] | None = None  # an edge page to send once the body is read
        self.api_body: bytearray | None = None
        self.redirect: str | None = None  # Location of a 308 to the HTTPS front

    async def begin(self) -> None:
        req = self.req
        front = self.front
        hostname = strip_port(req.host).lower()
        if front.api is not None and hostname in front.api_hosts:
            self.api_body = bytearray()
            return
        tunnel_id = front.store.resolve(hostname)
        if tunnel_id is None:
            self.local = (404, f"No tunnel serves the hostname {hostname or '(none)'!r}.")
            return
        if front.https_redirect is not None:
            self.redirect = front.https_redirect(req)
            if self.redirect is not None:
                self.local = (308, f"This site is served over HTTPS: {self.redirect}")
                return
        remote = front.remote  # pick_live without a coroutine when this edge holds one
        live = front.registry.pick(tunnel_id) or (
            await remote.pick(tunnel_id) if remote is not None else None)
        if live is None:
            self.local = (530, f"The tunnel for {hostname} has no live connector connection.")
            return
        self.exchange = exchange = Exchange(live, req, self.out,
                                            repicker(front, tunnel_id),
                                            limits=front.limits)
        try:
            await exchange.start()
        except HeadTooLargeError as exc:
            self.exchange = None
            self.local = (431, str(exc))
            return
        except ExchangeError as exc:
            self.exchange = None
            self.local = (502, str(exc))
            return
        if exchange.expects_continue:
            # curl waits a second for this before sending a large body
            front.batch.release(self.writer.transport)  # a previous response first
            self.writer.write(encode_head(100, []))

    async def body(self, chunk: bytes) -> None:
        if self.exchange is not None:
            await self.exchange.request_body(chunk)
        elif self.api_body is not None:
            if len(self.api_body) + len(chunk) > MAX_API_BODY:
                self.api_body = None
                self.local = (413, "The API request body is too large.")
            else:
                self.api_body += chunk

    async def finish(self, deadline: Deadline | None = None) -> bool:
        """Complete the request; returns whether the connection stays open."""
        if self.exchange is not None:
            try:
                await self.exchange.finish(deadline)
                return self.out.keep_alive
            finally:
                self.front.count(self.out.status or 502)
        if self.api_body is not None and self.front.api is not None:
            status, headers, body = await self.front.api(self.req, bytes(self.api_body))
            self.out.whole(status, [(n.decode("latin-1"), v.decode("latin-1"))
                                    for n, v in headers], body)
        else:
            status, detail = self.local or (500, "internal error")
            extra = [("Location", self.redirect)] if self.redirect else []
            self.out.page(status, detail, as_html=wants_html(self.req.headers), extra=extra)
        self.front.count(self.out.status)
        return await self.out.end()

    async def finish_watching_client(self, reader: ClientReader, deadline: Deadline) -> bool:
        """Wait for the response while watching the client socket: if the client hangs up
        (e.g. during a silent long-poll) the exchange is aborted at once, which resets the data
        stream so the connector releases the origin. Returns whether the connection stays
        open (False when the client went away). Bytes the client sends meanwhile (a
        pipelined request) stay in the reader for the next read. ``deadline`` is the
        connection's (deadline.py): the response head waits under it."""
        exchange = self.exchange
        if exchange is None or reader.at_eof() or reader.exception() is not None:
            return await self.finish(deadline)
        task = deadline.task
        assert task is not None
        gone = False

        def on_gone() -> None:
            nonlocal gone
            if not gone:
                gone = True
                task.cancel()

        reader.on_gone = on_gone
        try:
            await exchange.finish(deadline)
            return self.out.keep_alive
        except asyncio.CancelledError:
            if gone and task.uncancel() == 0:
                await self.client_gone()
                return False
            raise
        finally:
            reader.on_gone = None
            self.front.count(self.out.status or 502)

    async def refuse(self, status: int, detail: str) -> None:
        """The request cannot go on (a stalled or malformed body): answer if nothing was
        sent yet, then the connection closes."""
        if self.exchange is not None:
            await self.exchange.abort(detail)
        if not self.out.started:
            self.out.keep_alive = False
            self.out.page(status, detail, as_html=wants_html(self.req.headers))
            self.front.count(status)
            await self.out.end()

    async def client_gone(self) -> None:
        if self.exchange is not None:
            await self.exchange.abort("client closed the connection")

    async def run_upgraded(self, reader: ClientReader, rest: bytes) -> None:
        if self.exchange is None:
            self.out.keep_alive = False
            await self.finish()
            return
        try:
            await self.exchange.run_upgraded(reader, rest)
        finally:
            self.front.count(self.out.status or 502)
