"""The HTTPS public front: TLS in front of the same routing as the HTTP front.

One TLS listener (certificates from `CertStore`: files by SNI, or issued by the local CA);
ALPN decides what follows: `h2` goes to the HTTP/2 front (`h2front.py`), anything else
(`http/1.1`, or no ALPN, which is what `cloudflared access` and WebSocket clients send) to the
HTTP/1.1 front's own connection handler, with the scheme set to https so the connector sees
`X-Forwarded-Proto: https` and `Cf-Visitor: {"scheme":"https"}`. Optionally the plain HTTP
front answers requests for tunnel hostnames with a 308 to this front.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from nbtunnel.core.http1 import strip_port
from nbtunnel.edge.certs import CertStore
from nbtunnel.edge.front import PublicFront, Request
from nbtunnel.edge.h2front import H2FrontConnection
from nbtunnel.edge.listener import ClientReader, start_server
from nbtunnel.transport.tls_buffer import trim_read_buffer

log = logging.getLogger("nbtunnel.edge.https")

HANDSHAKE_TIMEOUT = 10.0


class HttpsFront:
    """TLS listener for the public front (see module docstring)."""

    def __init__(self, front: PublicFront, certs: CertStore, *, http2: bool = True) -> None:
        self.front = front
        self.certs = certs
        self.http2 = http2
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections_h2 = 0
        self.connections_h1 = 0

    async def start(self, host: str, port: int) -> None:
        self._server = await start_server(
            self._on_client, host, port, ssl=self.certs.context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT, limit=2**16)

    @property
    def sockname(self) -> tuple[str, int]:
        assert self._server is not None
        name = self._server.sockets[0].getsockname()
        return name[0], name[1]

    def enable_redirect(self) -> None:
        """Make the plain HTTP front send tunnel hostnames here (308, method kept)."""
        port = self.sockname[1]

        def location(req: Request) -> str | None:
            host = strip_port(req.host)
            if not host:
                return None
            return f"https://{host}{'' if port == 443 else f':{port}'}{req.target}"

        self.front.https_redirect = location

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        self.certs.close()

    async def _on_client(self, reader: ClientReader,
                         writer: asyncio.StreamWriter) -> None:
        trim_read_buffer(writer.transport)
        ssl_obj = writer.get_extra_info("ssl_object")
        alpn = ssl_obj.selected_alpn_protocol() if isinstance(ssl_obj, ssl.SSLObject) else None
        if alpn != "h2" or not self.http2:
            self.connections_h1 += 1
            await self.front.serve(reader, writer, scheme="https")
            return
        self.connections_h2 += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # owned: close() cancels and awaits it
        try:
            await H2FrontConnection(self.front, reader, writer).run()
        except asyncio.CancelledError:
            pass
        except Exception:  # one broken client must never take the front down
            log.exception("HTTP/2 client connection failed")
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
