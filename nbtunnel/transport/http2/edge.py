"""The edge's role over HTTP/2: client of the connector's HTTP/2 server, and the listener.

The edge opens every stream: the control stream is a request marked
`Cf-Cloudflared-Proxy-Connection-Upgrade: control-stream` whose bodies carry the RPC bytes,
a remote configuration is an `update-configuration` request with a JSON body, and every
eyeball request is an ordinary HTTP/2 request. A graceful GOAWAY from cloudflared stops new
streams while the ones it accepted finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Awaitable, Callable

from nbtunnel.core.h2.frames import Setting
from nbtunnel.core.h2headers import UPGRADE_HEADER
from nbtunnel.transport.errors import TransportError
from nbtunnel.transport.handlers import ConnectionHandlers
from nbtunnel.transport.http2.connection import FRAME_SIZE, WINDOW, H2Connection
from nbtunnel.transport.http2.stream import H2Stream

CONTROL_REQUEST = [(":method", "GET"), (":scheme", "http"), (":authority", "localhost:8080"),
                   (":path", "/"), (UPGRADE_HEADER, "control-stream")]
CONFIGURATION_REQUEST = [(":method", "PUT"), (":scheme", "http"), (":authority", "localhost"),
                         (":path", "/"), (UPGRADE_HEADER, "update-configuration")]


class EdgeH2Connection(H2Connection):
    """One connector connection over HTTP/2 (the edge is the client)."""

    client_side = True
    peer_name = "connector"
    settings = {Setting.ENABLE_PUSH: 0,
                Setting.INITIAL_WINDOW_SIZE: WINDOW,
                Setting.MAX_FRAME_SIZE: FRAME_SIZE}

    def __init__(self) -> None:
        super().__init__()
        self._goaway = False

    @property
    def closed(self) -> bool:
        """No new streams: the connection ended, or cloudflared sent GOAWAY."""
        return self.terminated or self._goaway

    async def control_stream(self) -> H2Stream:
        stream = H2Stream(self)
        stream.send_headers(CONTROL_REQUEST, end_stream=False)
        return stream

    def open_stream(self) -> H2Stream:
        """A data stream; its HEADERS go out with ``send_request()``."""
        if self.closed:
            raise self.closed_error()
        return H2Stream(self)

    async def accept_stream(self) -> H2Stream:
        raise TransportError("over HTTP/2 the connector opens no streams")

    async def update_configuration(self, version: int, config: bytes) -> tuple[int, str]:
        """Remote config push: the HTTP/2 `update-configuration` request (no RPC here)."""
        body = b'{"version":%d,"config":%s}' % (version, config)
        stream = H2Stream(self)
        stream.send_headers(CONFIGURATION_REQUEST, end_stream=False)
        try:
            await stream.write(body)
            stream.write_eof()
            await stream.response_headers()
            raw = b""
            while chunk := await stream.read():
                raw += chunk
            doc = json.loads(raw)
        except ValueError as exc:
            raise TransportError(f"bad update-configuration answer: {exc}") from exc
        except BaseException:
            stream.reset(0)
            raise
        err = doc.get("err")
        text = "" if err is None else (str(err) if err else "the connector rejected it")
        return int(doc.get("lastAppliedVersion", -1)), text

    def _on_goaway(self, code: int, last_stream_id: int | None) -> None:
        """Graceful GOAWAY: streams up to `last_stream_id` finish, later ones never ran."""
        self.close_reason = f"the connector sent GOAWAY (code {code})"
        if code:
            self._terminate(self.close_reason)
            return
        self._goaway = True
        for sid, stream in list(self.streams.items()):
            if last_stream_id is None or sid > last_stream_id:
                stream.on_closed()  # not processed: a replayable request may go elsewhere
                self.forget(sid)


class H2Listener:
    """TCP+TLS listener for HTTP/2 connectors; owns each connection's handler task."""

    def __init__(self, on_connection: Callable[[EdgeH2Connection], Awaitable[None]]) -> None:
        self._handlers = ConnectionHandlers(on_connection)
        self._server: asyncio.Server | None = None
        self._conns: set[EdgeH2Connection] = set()
        self.sockname: tuple[str, int] = ("", 0)

    async def start(self, host: str, port: int, certfile: str, keyfile: str, *,
                    reuse_port: bool = False, tls_timeout: float = 10.0) -> None:
        """Listen; a peer that has not finished its TLS handshake after ``tls_timeout``
        seconds is dropped (an unauthenticated socket must not be held for free)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(certfile, keyfile)  # no ALPN: cloudflared offers none
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_connection, host, port, ssl=ctx,
                                                reuse_port=reuse_port or None,
                                                ssl_handshake_timeout=tls_timeout)
        name = self._server.sockets[0].getsockname()
        self.sockname = (str(name[0]), int(name[1]))

    def _new_connection(self) -> EdgeH2Connection:
        conn = _ListenedConnection(self)
        return conn

    async def close(self) -> None:
        """Close every connection, cancel and await their handlers, stop listening."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.close(0, "edge shutting down")
        await self._handlers.aclose()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None


class _ListenedConnection(EdgeH2Connection):
    """A connection the listener accepted: its handler starts once TLS is up."""

    def __init__(self, listener: H2Listener) -> None:
        super().__init__()
        self._listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._listener._conns.add(self)
        self._listener._handlers.spawn(self)

    def _on_terminated(self) -> None:
        self._listener._conns.discard(self)
