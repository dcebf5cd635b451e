"""One HTTP/2 request on the HTTPS front: an edge page, an API call, or a tunnel exchange.

The same decisions as the HTTP/1.1 front (handler.py), and the same `Exchange`: the hostname
picks the tunnel, a connection of it carries a data stream with the same request metadata
(scheme https), the connector's head is checked (`check_response_head`: 502 when it fails),
a connector that does not answer within the response deadline gets the visitor a 524, and a
dead connection is retried for idempotent requests. HTTP/2 differs only in framing
(`H2ResponseWriter`): no connection-specific headers, cookies joined back into one header,
and no upgrade (a connector that switches protocols gets a 502 here, since an HTTP/2 client
cannot have asked for it). The request body has the HTTP/1.1 front's deadline and minimum
rate: 408.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from nbtunnel.core.errors import NbtunnelError
from nbtunnel.core.http1 import strip_port
from nbtunnel.edge.body_rate import BodyRate
from nbtunnel.edge.exchange import Exchange, ExchangeError, HeadTooLargeError
from nbtunnel.edge.front import Request
from nbtunnel.edge.h2response import H2ResponseWriter
from nbtunnel.edge.handler import MAX_API_BODY, pick_live, repicker
from nbtunnel.edge.pages import wants_html

if TYPE_CHECKING:
    import uuid

    from nbtunnel.edge.front import PublicFront
    from nbtunnel.edge.h2stream import FrontStream
    from nbtunnel.edge.registry import LiveConnection

log = logging.getLogger("nbtunnel.edge.h2front")


class BodyRefusedError(NbtunnelError):
    """The request body stalled or came too slowly: 408, the exchange is aborted."""


class H2Request:
    def __init__(self, front: PublicFront, stream: FrontStream, client_ip: str) -> None:
        self.front = front
        self.stream = stream
        self.limits = front.limits
        pseudo = {n: v for n, v in stream.headers if n.startswith(b":")}
        cookies = [v for n, v in stream.headers if n == b"cookie"]
        headers = [(n, v) for n, v in stream.headers if not n.startswith(b":") and n != b"cookie"]
        if cookies:
            headers.append((b"cookie", b"; ".join(cookies)))
        host = (pseudo.get(b":authority") or next((v for n, v in headers if n == b"host"), b""))
        front.requests_total += 1
        self.req = Request(
            method=pseudo.get(b":method", b"GET").decode("latin-1"),
            target=pseudo.get(b":path", b"/").decode("latin-1"),
            host=host.decode("latin-1"), headers=headers, version="2", keep_alive=True,
            upgrade=False, client_ip=client_ip, ray=front.new_ray(), scheme="https")
        self.out = H2ResponseWriter(stream, ray=self.req.ray, method=self.req.method)
        self.rate = BodyRate(self.limits.min_body_rate, self.limits.body_rate_grace)

    async def run(self) -> None:
        req = self.req
        refusal = self._head_refusal()
        if refusal is not None:
            await self._page(431, refusal)
            return
        hostname = strip_port(req.host).lower()
        if self.front.api is not None and hostname in self.front.api_hosts:
            await self._api()
            return
        tunnel_id = self.front.store.resolve(hostname)
        if tunnel_id is None:
            await self._page(404, f"No tunnel serves the hostname {hostname or '(none)'!r}.")
            return
        live = await pick_live(self.front, tunnel_id)
        if live is None:
            await self._page(530, f"The tunnel for {hostname} has no live connector connection.")
            return
        await self._exchange(live, tunnel_id)

    def _head_refusal(self) -> str | None:
        """The HTTP/1.1 front's head limits (431), on the decoded header list."""
        fields = self.stream.headers
        if len(fields) > self.limits.max_fields:
            return f"The request has more than {self.limits.max_fields} header fields."
        if sum(len(n) + len(v) + 4 for n, v in fields) > self.limits.max_head_bytes:
            return "The request head is too large."
        return None

    async def _page(self, status: int, detail: str) -> None:
        self.out.page(status, detail, as_html=wants_html(self.req.headers))
        await self._finish()

    async def _finish(self) -> None:
        await self.out.end()
        self.front.count(self.out.status)
        if not self.stream.ended:
            self.stream.abort(no_error=True)  # a request body we do not read (RFC 9113 8.1)

    async def _api(self) -> None:
        assert self.front.api is not None
        body = bytearray()
        try:
            while chunk := await self._read_body():
                body += chunk
                if len(body) > MAX_API_BODY:
                    await self._page(413, "The API request body is too large.")
                    return
        except BodyRefusedError as exc:
            await self._page(408, str(exc))
            return
        status, headers, out = await self.front.api(self.req, bytes(body))
        self.out.whole(status, [(n.decode("latin-1"), v.decode("latin-1"))
                                for n, v in headers if n.lower() != b"content-length"], out)
        await self._finish()

    async def _read_body(self) -> bytes:
        """The next request body chunk (b"" at its end) under the body deadline and the
        minimum body rate."""
        clock = self.front.clock
        self.rate.waiting(clock.monotonic())
        try:
            async with asyncio.timeout(self.limits.body_timeout):
                chunk = await self.stream.read()
        except TimeoutError:
            raise BodyRefusedError("The request body stalled.") from None
        too_slow = self.rate.received(len(chunk), clock.monotonic())
        if too_slow is not None and chunk and not self.stream.ended:
            raise BodyRefusedError(too_slow)
        return chunk

    async def _exchange(self, live: LiveConnection, tunnel_id: uuid.UUID) -> None:
        exchange = Exchange(live, self.req, self.out, repicker(self.front, tunnel_id),
                            limits=self.limits)
        try:
            await exchange.start()
        except HeadTooLargeError as exc:
            await self._page(431, str(exc))
            return
        except ExchangeError as exc:
            await self._page(502, str(exc))
            return
        try:
            if exchange.has_body and not await self._send_body(exchange):
                return
            await exchange.finish()
        except BaseException:
            await exchange.abort("the client reset the stream or left")
            raise
        finally:
            self.front.count(self.out.status or 502)
        if not self.stream.ended:
            self.stream.abort(no_error=True)  # answered before the whole request body

    async def _send_body(self, exchange: Exchange) -> bool:
        """Forward the request body while the response may already be relayed; False when
        the exchange ended here (the body was refused, or the response came first)."""
        pump = asyncio.ensure_future(self._pump(exchange))
        try:
            await asyncio.wait([pump, exchange.response], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not pump.done():
                pump.cancel()
                await asyncio.wait([pump])
        if pump.cancelled():  # the whole response went out before the body: drop the rest
            await exchange.abort("answered before the request body ended")
            return False
        exc = pump.exception()
        if isinstance(exc, BodyRefusedError):
            await exchange.abort(str(exc))
            if not self.out.started:
                self.out.page(408, str(exc), as_html=wants_html(self.req.headers))
                await self.out.end()
            self.stream.abort()
            return False
        if exc is not None:
            raise exc  # the client reset the stream
        return True

    async def _pump(self, exchange: Exchange) -> None:
        while chunk := await self._read_body():
            await exchange.request_body(chunk)
