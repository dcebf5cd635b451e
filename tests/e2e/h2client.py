"""A real HTTP/2 client (TLS, ALPN h2, the h2 state machine) that can also send what a
browser never would: raw frames, floods, resets, a window it never opens."""

from __future__ import annotations

import asyncio
import ssl
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack

from nbtunnel.edge.limits import FrontLimits
from nbtunnel.edge.server import Edge, EdgeConfig

# frame types (RFC 9113 section 6)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0, 1, 2, 3, 4, 6, 7, 8, 9)
END_STREAM, END_HEADERS = 0x1, 0x4
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@asynccontextmanager
async def https_edge(tmp_path: Path, limits: FrontLimits) -> AsyncIterator[Edge]:
    """An edge with an HTTPS front (HTTP/2 and HTTP/1.1) and these front limits."""
    async with Edge(EdgeConfig(state_dir=tmp_path / "edge", quic_port=0, http_port=0,
                               https_port=0, front=limits)) as e:
        yield e


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(
        ">I", stream_id) + payload


async def tls_h2(edge: Edge) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TLS connection to the HTTPS front that negotiated h2."""
    ctx = ssl.create_default_context(cafile=str(edge.ca_path))
    ctx.set_alpn_protocols(["h2"])
    address = edge.https_address
    assert address is not None
    reader, writer = await asyncio.open_connection(*address, ssl=ctx,
                                                   server_hostname="localhost")
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
    return reader, writer


@dataclass
class H2Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    ended: bool = False
    reset: int | None = None
    """The RST_STREAM error code, if the server reset the stream."""

    def header(self, name: bytes) -> bytes | None:
        return next((v for n, v in self.headers if n == name), None)


class H2Client:
    """One connection; ``responses`` collects what arrives per stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 window: int | None = None) -> None:
        self.reader = reader
        self.writer = writer
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        if window is not None:
            self.h2.local_settings = h2.settings.Settings(client=True, initial_values={
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.responses: dict[int, H2Response] = {}
        self.goaway: int | None = None
        """The GOAWAY error code, once one arrived."""
        self.closed = False
        self.auto_ack = window is None
        self.h2.initiate_connection()
        self.flush()

    @classmethod
    async def open(cls, edge: Edge, *, window: int | None = None) -> H2Client:
        return cls(*await tls_h2(edge), window)

    def flush(self) -> None:
        if data := self.h2.data_to_send():
            self.writer.write(data)

    def get(self, host: str, path: str = "/", *, method: str = "GET",
            extra: list[tuple[str, str]] | None = None, end: bool = True) -> int:
        stream_id = self.h2.get_next_available_stream_id()
        headers = [(":method", method), (":scheme", "https"), (":authority", host),
                   (":path", path), ("user-agent", "curl/8"), *(extra or [])]
        self.h2.send_headers(stream_id, headers, end_stream=end)
        self.responses[stream_id] = H2Response()
        self.flush()
        return stream_id

    def send_body(self, stream_id: int, data: bytes, *, end: bool = False) -> None:
        self.h2.send_data(stream_id, data, end_stream=end)
        self.flush()

    async def pump(self) -> bool:
        """Read once and process; False when the server closed the connection."""
        data = await self.reader.read(65536)
        if not data:
            self.closed = True
            return False
        for event in self.h2.receive_data(data):
            self._on(event)
        self.flush()
        return True

    async def until(self, done: object, timeout: float = 10.0) -> None:
        """Pump until ``done()`` holds or the connection closes."""
        assert callable(done)
        async with asyncio.timeout(timeout):
            while not done():
                if not await self.pump():
                    return

    async def response(self, stream_id: int, timeout: float = 10.0) -> H2Response:
        resp = self.responses[stream_id]
        await self.until(lambda: resp.ended or resp.reset is not None or self.goaway is not None,
                         timeout)
        return resp

    async def drain_to_close(self, timeout: float = 10.0) -> bytes:
        """Everything the server sends until it closes, as raw bytes (for raw-frame tests)."""
        got = bytearray()
        async with asyncio.timeout(timeout):
            while data := await self.reader.read(65536):
                got += data
        self.closed = True
        return bytes(got)

    def close(self) -> None:
        self.writer.close()

    def _on(self, event: h2.events.Event) -> None:
        sid = getattr(event, "stream_id", None) or 0
        resp = self.responses.get(sid)
        if isinstance(event, h2.events.ResponseReceived) and resp is not None:
            resp.headers = list(event.headers or [])
            resp.status = int(dict(resp.headers)[b":status"])
        elif isinstance(event, h2.events.DataReceived) and resp is not None:
            resp.body += event.data or b""
            if self.auto_ack:
                self.h2.acknowledge_received_data(event.flow_controlled_length or 0, sid)
        elif isinstance(event, h2.events.StreamEnded) and resp is not None:
            resp.ended = True
        elif isinstance(event, h2.events.StreamReset) and resp is not None:
            resp.reset = int(event.error_code or 0)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = int(event.error_code or 0)


def goaway_code(raw: bytes) -> int | None:
    """The error code of the first GOAWAY among raw frames sent by the server."""
    return next((int.from_bytes(payload[4:8], "big") for kind, _, _, payload in frames(raw)
                 if kind == GOAWAY), None)


class RawH2:
    """Frames written by hand, as an attacker would: no h2 state machine to refuse breaking
    the rules, and the server's SETTINGS are never acknowledged."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.encoder = hpack.Encoder()
        self.received = bytearray()

    @classmethod
    async def open(cls, edge: Edge) -> RawH2:
        raw = cls(*await tls_h2(edge))
        raw.writer.write(PREFACE + frame(SETTINGS, 0, 0))
        return raw

    def headers(self, stream_id: int, host: str, *, end_stream: bool = True,
                end_headers: bool = True, method: str = "GET") -> bytes:
        block = self.encoder.encode([(":method", method), (":scheme", "https"),
                                     (":authority", host), (":path", "/"),
                                     ("user-agent", "curl/8")])
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        return frame(HEADERS, flags, stream_id, block)

    async def read_until(self, done: object, timeout: float = 10.0) -> bool:
        """Read frames until ``done(frames)`` holds; False if the server closed first."""
        assert callable(done)
        async with asyncio.timeout(timeout):
            while not done(frames(bytes(self.received))):
                data = await self.reader.read(65536)
                if not data:
                    return False
                self.received += data
        return True

    def close(self) -> None:
        self.writer.close()


def frames(raw: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of each complete frame in ``raw``."""
    out = []
    pos = 0
    while pos + 9 <= len(raw):
        length = int.from_bytes(raw[pos:pos + 3], "big")
        if pos + 9 + length > len(raw):
            break
        sid = int.from_bytes(raw[pos + 5:pos + 9], "big") & 0x7FFFFFFF
        out.append((raw[pos + 3], raw[pos + 4], sid, raw[pos + 9:pos + 9 + length]))
        pos += 9 + length
    return out


def resets(raw: bytes, code: int) -> list[int]:
    """Streams the server reset with ``code``."""
    return [sid for kind, _, sid, payload in frames(raw)
            if kind == RST_STREAM and int.from_bytes(payload[:4], "big") == code]
