"""One HTTP/2 request on the HTTPS front: an edge page, an API call, or a tunnel exchange.

The same decisions as the HTTP/1.1 front (handler.py, exchange.py): the hostname picks the
tunnel, a connection of it carries a data stream with the same request metadata
(`metadata_headers`, scheme https), and the connector's answer is relayed as it arrives;
failures before the response head become the same error pages. HTTP/2 differs only in framing:
no hop-by-hop headers, cookies joined back into one header, and no upgrade (a connector that
switches protocols gets a 502 here, since an HTTP/2 client cannot have asked for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import TYPE_CHECKING

from nbtunnel.core.errors import ProtocolError
from nbtunnel.core.http1 import HOP_BY_HOP
from nbtunnel.core.httpmeta import build_connect_request, parse_http_response, request_has_body
from nbtunnel.edge.exchange import metadata_headers, switched_page
from nbtunnel.edge.front import Request
from nbtunnel.edge.handler import strip_port
from nbtunnel.edge.pages import error_page, wants_html
from nbtunnel.transport.errors import TransportError

if TYPE_CHECKING:
    from nbtunnel.edge.front import PublicFront
    from nbtunnel.edge.h2front import FrontStream
    from nbtunnel.edge.registry import LiveConnection
    from nbtunnel.transport.base import DataStream

log = logging.getLogger("nbtunnel.edge.h2front")

# Connection-specific headers are illegal in HTTP/2 responses (RFC 9113 section 8.2.2).
_RESPONSE_DROP = frozenset(name.encode() for name in HOP_BY_HOP)
_NO_BODY = {204, 304}
MAX_API_BODY = 1024 * 1024


class H2Request:
    def __init__(self, front: PublicFront, stream: FrontStream, client_ip: str) -> None:
        self.front = front
        self.stream = stream
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
            upgrade=False, client_ip=client_ip, ray=f"{secrets.token_hex(8)}-{front.location}",
            scheme="https")

    async def run(self) -> None:
        req = self.req
        hostname = strip_port(req.host).lower()
        if self.front.api is not None and hostname in self.front.api_hosts:
            await self._api()
            return
        tunnel_id = self.front.store.resolve(hostname)
        if tunnel_id is None:
            await self._page(404, f"No tunnel serves the hostname {hostname or '(none)'!r}.")
            return
        live = self.front.registry.pick(tunnel_id)
        remote = self.front.remote  # another edge of the deployment (peering.py)
        if live is None and remote is not None:
            live = await remote.pick(tunnel_id)
        if live is None:
            await self._page(530, f"The tunnel for {hostname} has no live connector connection.")
            return
        await self._exchange(live, hostname)

    async def _page(self, status: int, detail: str) -> None:
        ctype, body = error_page(status, detail, ray=self.req.ray,
                                 as_html=wants_html(self.req.headers))
        await self._send(status, [(b"content-type", ctype)], body)

    async def _send(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        head = [(b":status", str(status).encode()), *headers,
                (b"content-length", str(len(body)).encode()), (b"cf-ray", self.req.ray.encode()),
                (b"server", b"nbtunnel")]
        empty = self.req.method == "HEAD" or not body
        self.stream.respond(head, end=empty)
        if not empty:
            await self.stream.write(body)
            self.stream.end()
        if not self.stream.ended:
            self.stream.abort()  # a request body we do not read: stop it

    async def _api(self) -> None:
        assert self.front.api is not None
        body = bytearray()
        while chunk := await self.stream.read():
            body += chunk
            if len(body) > MAX_API_BODY:
                await self._page(413, "The API request body is too large.")
                return
        status, headers, out = await self.front.api(self.req, bytes(body))
        await self._send(status, [(n.lower(), v) for n, v in headers
                                  if n.lower() not in _RESPONSE_DROP], out)

    async def _exchange(self, live: LiveConnection, hostname: str) -> None:
        req = self.req
        headers = metadata_headers(req)
        if not self.stream.ended and not any(k.lower() == "content-length" for k, _ in headers):
            headers.append(("Transfer-Encoding", "chunked"))  # a body of unknown length
        has_body = request_has_body(headers)
        request = build_connect_request(req.method, req.host, req.target, headers,
                                        scheme="https")
        live.in_flight += 1
        tunnel: DataStream | None = None
        try:
            try:
                tunnel = live.transport.open_stream()
                await tunnel.send_request(request, end_stream=not has_body)
            except TransportError as exc:
                await self._page(502, f"could not open a data stream to the connector: {exc}")
                return
            pump = asyncio.ensure_future(self._pump_body(tunnel)) if has_body else None
            try:
                await self._respond(tunnel, hostname)
            finally:
                if pump is not None:
                    pump.cancel()
                    await asyncio.gather(pump, return_exceptions=True)
        except BaseException:
            if tunnel is not None:
                with contextlib.suppress(Exception):
                    tunnel.reset(0)
            raise
        finally:
            live.in_flight -= 1
            live.served += 1
            if live.draining and live.in_flight == 0:
                live.transport.close(0, "unregistered")

    async def _pump_body(self, tunnel: DataStream) -> None:
        with contextlib.suppress(TransportError, ConnectionError):
            while chunk := await self.stream.read():
                await tunnel.write(chunk)
            tunnel.write_eof()

    async def _respond(self, tunnel: DataStream, hostname: str) -> None:
        try:
            head = await tunnel.receive_response()
            if head.error:
                raise TransportError(head.error)
            status, origin = parse_http_response(head)
        except (TransportError, ProtocolError) as exc:
            log.info("%s %s%s -> 502: %s", self.req.method, self.req.host, self.req.target, exc)
            await self._page(502, str(exc))
            return
        if status == 101 or status < 200:
            tunnel.reset(0)
            await self._page(502, switched_page(hostname))
            return
        out = [(b":status", str(status).encode())]
        for name, value in origin:
            lname = name.lower().encode("latin-1")
            if lname in _RESPONSE_DROP or "\r" in value or "\n" in value:
                continue
            out.append((lname, value.encode("latin-1", "replace")))
        out.append((b"cf-ray", self.req.ray.encode()))
        no_body = self.req.method == "HEAD" or status in _NO_BODY
        self.stream.respond(out, end=False)
        try:
            while data := await tunnel.read(65536):
                if not no_body:
                    await self.stream.write(data)
        except (TransportError, ProtocolError) as exc:
            log.info("response %s broke: %s", self.req.ray, exc)
            self.stream.abort()  # a truncated body must not look complete
            return
        self.stream.end()
