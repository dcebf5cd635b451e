"""`connect(hostname)`: a TCP-like connection carried over a WebSocket through the edge.

The result is a plain asyncio (StreamReader, StreamWriter) pair. Underneath, a protocol on the
TLS (or plain) connection does the HTTP/1.1 upgrade, then turns WebSocket frames into reader
bytes, and a transport turns writes into masked binary frames (`WsCarrier`). No extra task and
no extra copy: reading back-pressure pauses the socket (`pause_reading`), writing back-pressure
is the socket's own (`drain()` waits while its buffer is full). `writer.write_eof()` sends a
Close frame (our half-close; the peer's data keeps arriving) and the peer's Close ends the
reader with EOF, so both half-closes of the carried flow are honoured.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
from typing import Any, cast

import h11

from nbtunnel.access.target import AccessError, AccessTarget
from nbtunnel.core.wscarrier import CarrierClosed, CarrierError, WsCarrier, accept_key

MAX_HEAD = 64 * 1024
MAX_ERROR_BODY = 4096
READ_LIMIT = 2**18


class _CarrierProtocol(asyncio.Protocol):
    """Protocol on the edge connection: handshake first, then frames <-> the app protocol."""

    def __init__(self, target: AccessTarget) -> None:
        self.target = target
        self.key = base64.b64encode(os.urandom(16)).decode("ascii")
        self.carrier = WsCarrier(client=True)
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self.handshake: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.raw: asyncio.Transport | None = None
        self.app: asyncio.StreamReaderProtocol | None = None
        self._status = 0
        self._body = bytearray()
        self._paused = False

    # -- handshake ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.raw = transport
        headers = [("Host", self.target.host_header), ("Upgrade", "websocket"),
                   ("Connection", "Upgrade"), ("Sec-WebSocket-Key", self.key),
                   ("Sec-WebSocket-Version", "13"), ("User-Agent", "nbtunnel-access")]
        if self.target.destination:
            headers.append(("Cf-Access-Jump-Destination", self.target.destination))
        headers += list(self.target.headers)
        transport.write(self.h11.send(h11.Request(method="GET", target="/", headers=headers)))
        transport.write(self.h11.send(h11.EndOfMessage()))

    def _handshake_data(self, data: bytes) -> None:
        try:
            self.h11.receive_data(data)
            while True:
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    return
                if isinstance(event, h11.InformationalResponse):
                    if event.status_code == 101:
                        self._upgraded(event)
                        return
                    continue
                if isinstance(event, h11.Response):
                    self._status = event.status_code
                elif isinstance(event, h11.Data):
                    self._body += event.data[: MAX_ERROR_BODY - len(self._body)]
                    if len(self._body) >= MAX_ERROR_BODY:
                        self._refused()
                        return
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    self._refused()
                    return
        except h11.RemoteProtocolError as exc:
            self._fail(AccessError(f"the edge sent a malformed HTTP response: {exc}"))

    def _upgraded(self, event: h11.InformationalResponse) -> None:
        got = dict((k.lower(), v) for k, v in event.headers.raw_items())
        if got.get(b"sec-websocket-accept", b"").decode("latin-1") != accept_key(self.key):
            self._fail(AccessError("the edge answered 101 with a wrong Sec-WebSocket-Accept"))
            return
        rest, _ = self.h11.trailing_data
        if not self.handshake.done():
            self.handshake.set_result(bytes(rest))

    def _refused(self) -> None:
        body = self._body.decode("utf-8", "replace").strip()
        detail = next((line for line in body.splitlines()[1:2] if line), body[:200])
        text = f"{self._status} {h11_reason(self._status)}"
        self._fail(AccessError(f"{self.target.host} answered {text} instead of a WebSocket"
                               f" upgrade{': ' + detail if detail else ''}"))

    def _fail(self, exc: AccessError) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(exc)
        if self.raw is not None:
            self.raw.abort()

    # -- carrying ----------------------------------------------------------------------------
    def attach(self, app: asyncio.StreamReaderProtocol, transport: CarrierTransport,
               rest: bytes) -> None:
        self.app = app
        app.connection_made(transport)
        if self._paused:
            app.pause_writing()
        if rest:
            self._frames(rest)

    def data_received(self, data: bytes) -> None:
        if self.app is None:
            if not self.handshake.done():
                self._handshake_data(data)
            return
        self._frames(data)

    def _frames(self, data: bytes) -> None:
        assert self.app is not None and self.raw is not None
        try:
            events = self.carrier.receive(data)
        except CarrierError as exc:
            self.raw.write(self.carrier.close(exc.code))
            self.app.connection_lost(ConnectionResetError(str(exc)))
            self.raw.abort()
            return
        for event in events:
            if isinstance(event, CarrierClosed):
                self.app.eof_received()
                if self.carrier.finished:
                    self.raw.close()
            else:
                self.app.data_received(event)
        replies = self.carrier.data_to_send()
        if replies:
            self.raw.write(replies)

    def eof_received(self) -> bool | None:
        if self.app is not None:
            self.app.eof_received()
        return False  # close the edge connection

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(AccessError(
                f"{self.target.host}: the edge closed the connection during the WebSocket "
                f"handshake{': ' + str(exc) if exc else ''}"))
            return
        if self.app is not None:
            if exc is None and self.carrier.close_received is None:
                exc = ConnectionResetError("the edge connection ended without a WebSocket Close")
            self.app.connection_lost(exc)

    def pause_writing(self) -> None:
        self._paused = True
        if self.app is not None:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        self._paused = False
        if self.app is not None:
            self.app.resume_writing()


def h11_reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class CarrierTransport(asyncio.Transport):
    """What the StreamWriter writes to: each write becomes one masked binary frame."""

    def __init__(self, proto: _CarrierProtocol) -> None:
        super().__init__()
        assert proto.raw is not None
        self._proto = proto
        self._raw = proto.raw

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._proto.carrier.close_sent:
            raise RuntimeError("write after write_eof()")
        if data:
            self._raw.write(self._proto.carrier.send(bytes(data)))

    def write_eof(self) -> None:
        self._raw.write(self._proto.carrier.close())
        if self._proto.carrier.finished:
            self._raw.close()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if not self._raw.is_closing():
            with contextlib.suppress(RuntimeError):
                self._raw.write(self._proto.carrier.close())
            self._raw.close()

    def abort(self) -> None:
        self._raw.abort()

    def is_closing(self) -> bool:
        return self._raw.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._raw.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._raw.pause_reading()

    def resume_reading(self) -> None:
        self._raw.resume_reading()

    def is_reading(self) -> bool:
        return self._raw.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._raw.set_write_buffer_limits(high, low)


async def open_carrier(target: AccessTarget, *, limit: int = READ_LIMIT
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the edge, upgrade, and return the carried flow as asyncio streams."""
    loop = asyncio.get_running_loop()
    ctx = target.ssl_context()
    host, port = target.dial
    proto = _CarrierProtocol(target)
    raw: asyncio.Transport | None = None
    try:
        async with asyncio.timeout(target.connect_timeout):
            await loop.create_connection(
                lambda: proto, host, port, ssl=ctx,
                server_hostname=target.host if ctx is not None else None)
            raw = proto.raw
            rest = await proto.handshake
    except TimeoutError:
        if raw is not None:
            raw.abort()
        raise AccessError(f"no WebSocket from {target.url} via {host}:{port} within "
                          f"{target.connect_timeout:g}s") from None
    except ssl.SSLCertVerificationError as exc:
        hint = ("pass --edge-ca with the edge's CA file (nbtunnel edge prints its path) or "
                "--insecure") if not target.edge_ca else "is --edge-ca the CA that signed it?"
        raise AccessError(f"TLS to {host}:{port} for {target.host}: the certificate is not "
                          f"trusted ({exc.verify_message}); {hint}") from exc
    except (ssl.SSLError, OSError) as exc:
        raise AccessError(f"cannot reach the edge at {host}:{port} for {target.host}: "
                          f"{exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}"
                          ) from exc
    except BaseException:
        if raw is not None:
            raw.abort()
        raise
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    app = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport = CarrierTransport(proto)
    proto.attach(app, transport, rest)
    writer = asyncio.StreamWriter(transport, app, reader, loop)
    return reader, writer


async def connect(hostname: str, *, edge_address: str | None = None,
                  edge_ca: str | None = None, insecure: bool = False,
                  destination: str | None = None, timeout: float = 30.0,
                  headers: tuple[tuple[str, str], ...] = ()
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a TCP flow to the service a tunnel publishes at `hostname`.

    `hostname` is a name (wss on port 443), `name:port`, or an `https://`/`http://` URL;
    `edge_address` ("127.0.0.1:8443") dials another address with the same SNI and Host;
    `edge_ca` / `insecure` decide how the edge certificate is checked; `destination` is the
    bastion jump destination. `writer.write_eof()` half-closes; raises AccessError.
    """
    target = AccessTarget.parse(hostname, edge_address=edge_address, edge_ca=edge_ca,
                                insecure=insecure, destination=destination, headers=headers,
                                connect_timeout=timeout)
    return await open_carrier(target)
