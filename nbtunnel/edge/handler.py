"""What one request on a public-front connection becomes: an edge page, an API call, or a
tunnel exchange over a data stream (see exchange.py)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from nbtunnel.edge.exchange import Exchange, ExchangeError
from nbtunnel.edge.pages import error_page, reason, wants_html
from nbtunnel.edge.registry import LiveConnection

if TYPE_CHECKING:
    from nbtunnel.edge.front import Headers, PublicFront, Request

MAX_API_BODY = 1024 * 1024


def strip_port(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class RequestHandler:
    """One request on a client connection: an edge page, an API call, or a tunnel exchange."""

    def __init__(self, front: PublicFront, req: Request, writer: asyncio.StreamWriter) -> None:
        self.front = front
        self.req = req
        self.writer = writer
        self.exchange: Exchange | None = None
        self.local: tuple[int, str] | None = None  # an edge page to send once the body is read
        self.api_body: bytearray | None = None
        self.redirect: str | None = None  # Location of a 308 to the HTTPS front

    async def begin(self) -> None:
        req = self.req
        hostname = strip_port(req.host).lower()
        if self.front.api is not None and hostname in self.front.api_hosts:
            self.api_body = bytearray()
            return
        tunnel_id = self.front.store.resolve(hostname)
        if tunnel_id is None:
            self.local = (404, f"No tunnel serves the hostname {hostname or '(none)'!r}.")
            return
        if self.front.https_redirect is not None:
            self.redirect = self.front.https_redirect(req)
            if self.redirect is not None:
                self.local = (308, f"This site is served over HTTPS: {self.redirect}")
                return
        live: LiveConnection | None = self.front.registry.pick(tunnel_id)
        remote = self.front.remote  # another edge of the deployment (peering.py)
        if live is None and remote is not None:
            live = await remote.pick(tunnel_id)
        if live is None:
            self.local = (530, f"The tunnel for {hostname} has no live connector connection.")
            return
        registry = self.front.registry

        def repick(failed: LiveConnection) -> LiveConnection | None:
            other = registry.pick(tunnel_id, exclude=failed)
            if other is None and remote is not None:
                other = remote.pick_cached(tunnel_id, failed)
            return other

        self.exchange = Exchange(live, req, self.writer, repick)
        try:
            await self.exchange.start()
        except ExchangeError as exc:
            self.exchange = None
            self.local = (502, str(exc))
            return
        if any(n.lower() == b"expect" and v.lower() == b"100-continue" for n, v in req.headers):
            # curl waits a second for this before sending a large body
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def body(self, chunk: bytes) -> None:
        if self.exchange is not None:
            await self.exchange.request_body(chunk)
        elif self.api_body is not None:
            if len(self.api_body) + len(chunk) > MAX_API_BODY:
                self.api_body = None
                self.local = (413, "The API request body is too large.")
            else:
                self.api_body += chunk

    async def finish(self) -> bool:
        """Complete the request; returns whether the connection stays open."""
        keep = self.req.keep_alive
        if self.exchange is not None:
            try:
                return await self.exchange.finish() and keep
            finally:
                self.front.count(self.exchange.status or 502)
        if self.api_body is not None and self.front.api is not None:
            status, headers, body = await self.front.api(self.req, bytes(self.api_body))
            self._write_local(status, headers, body, keep)
        else:
            status, detail = self.local or (500, "internal error")
            ctype, body = error_page(
                status, detail, ray=self.req.ray, as_html=wants_html(self.req.headers)
            )
            extra = [(b"Location", self.redirect.encode("latin-1"))] if self.redirect else []
            self._write_local(status, [(b"Content-Type", ctype), *extra], body, keep)
        await self.writer.drain()
        return keep

    def _write_local(self, status: int, headers: Headers, body: bytes, keep: bool) -> None:
        self.front.count(status)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, reason(status).encode())]
        for name, value in headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"Content-Length: %d\r\nCf-Ray: %s\r\nServer: nbtunnel\r\n" % (
            len(body), self.req.ray.encode()))
        if not keep:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        if self.req.method != "HEAD":
            head.append(body)
        self.writer.write(b"".join(head))

    async def client_gone(self) -> None:
        if self.exchange is not None:
            await self.exchange.abort("client closed the connection")

    async def run_upgraded(self, reader: asyncio.StreamReader, rest: bytes) -> None:
        if self.exchange is None:
            await self.finish()
            return
        try:
            await self.exchange.run_upgraded(reader, rest)
        finally:
            self.front.count(self.exchange.status or 502)
