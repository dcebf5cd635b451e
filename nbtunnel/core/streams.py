"""QUIC data-plane stream heads: preambles, ConnectRequest / ConnectResponse codecs.

An edge-opened stream starts with a 6-byte signature: data streams add version "01" and a
ConnectRequest; RPC streams go straight to Cap'n Proto RPC. The connector answers a data
stream with the same preamble and a ConnectResponse, then the raw body.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from nbtunnel.core.capnp_read import StructReader, frame_length, read_message
from nbtunnel.core.capnp_write import MessageBuilder, StructBuilder
from nbtunnel.core.errors import DecodeError

DATA_SIGNATURE = bytes.fromhex("0a36cd12a13e")
RPC_SIGNATURE = bytes.fromhex("52bb825cdb65")
PROTOCOL_VERSION = b"01"
PREAMBLE = DATA_SIGNATURE + PROTOCOL_VERSION
DEFAULT_MAX_HEAD_SIZE = 256 * 1024


class ConnectionType(IntEnum):
    HTTP = 0
    WEBSOCKET = 1
    TCP = 2


@dataclass
class ConnectRequest:
    dest: str
    type: ConnectionType
    metadata: list[tuple[str, str]]


@dataclass
class ConnectResponse:
    error: str
    metadata: list[tuple[str, str]]


@dataclass
class RpcStreamStart:
    """Head of an edge-opened RPC stream (its signature was seen)."""


def _write_metadata(sb: StructBuilder, i: int, metadata: list[tuple[str, str]]) -> None:
    entries = sb.init_struct_list(i, len(metadata), 0, 2)
    for entry, (key, val) in zip(entries, metadata, strict=True):
        entry.set_text(0, key)
        entry.set_text(1, val)


def _read_metadata(sr: StructReader, i: int) -> list[tuple[str, str]]:
    return [(e.text(0), e.text(1)) for e in sr.structs(i)]


def encode_connect_request(req: ConnectRequest) -> bytes:
    """Preamble + ConnectRequest (root: 1 data word, 2 pointers)."""
    mb = MessageBuilder()
    root = mb.init_root(1, 2)
    root.set_text(0, req.dest)
    root.set_u16(0, int(req.type))
    _write_metadata(root, 1, req.metadata)
    return PREAMBLE + mb.to_bytes()


def encode_connect_response(resp: ConnectResponse) -> bytes:
    """Preamble + ConnectResponse (root: 0 data words, 2 pointers), as cloudflared writes it:
    an error response without metadata has a null metadata list (Go nil slice), a success
    without metadata an empty one."""
    mb = MessageBuilder()
    root = mb.init_root(0, 2)
    root.set_text(0, resp.error)
    if resp.metadata or not resp.error:
        _write_metadata(root, 1, resp.metadata)
    return PREAMBLE + mb.to_bytes()


def decode_connect_request(root: StructReader) -> ConnectRequest:
    kind = root.u16(0)
    try:
        ctype = ConnectionType(kind)
    except ValueError as exc:
        raise DecodeError(f"unknown connection type {kind}") from exc
    return ConnectRequest(root.text(0), ctype, _read_metadata(root, 1))


def decode_connect_response(root: StructReader) -> ConnectResponse:
    return ConnectResponse(root.text(0), _read_metadata(root, 1))


class HeadParser:
    """Incremental parser for the head of an edge-opened stream (side='request': DATA
    preamble + ConnectRequest, or RPC signature) or of the connector's reply
    (side='response': preamble + ConnectResponse)."""

    def __init__(self, side: Literal["request", "response"],
                 max_message_size: int = DEFAULT_MAX_HEAD_SIZE) -> None:
        if side not in ("request", "response"):
            raise ValueError("side must be 'request' or 'response'")
        self.side = side
        self.max_message_size = max_message_size
        self._buf = bytearray()
        self.head: ConnectRequest | ConnectResponse | RpcStreamStart | None = None
        self.rest = b""

    def feed(self, data: bytes) -> ConnectRequest | ConnectResponse | RpcStreamStart | None:
        """None while more bytes are needed; after the head, further bytes go to ``rest``."""
        if self.head is not None:
            self.rest += data
            return None
        self._buf.extend(data)
        buf = self._buf
        sig = bytes(buf[:6])
        allowed = [DATA_SIGNATURE] + ([RPC_SIGNATURE] if self.side == "request" else [])
        if not any(s.startswith(sig) for s in allowed):
            raise DecodeError(f"unknown stream signature {sig.hex()}")
        if len(buf) < 6:
            return None
        if sig == RPC_SIGNATURE:
            return self._done(RpcStreamStart(), 6)
        if (len(buf) >= 7 and buf[6:7] != PROTOCOL_VERSION[:1]) or (
                len(buf) >= 8 and buf[6:8] != PROTOCOL_VERSION):
            raise DecodeError(f"unsupported stream protocol version {bytes(buf[6:8])!r}")
        if len(buf) < 8:
            return None
        with memoryview(buf) as view:
            n = frame_length(view[8:], self.max_message_size)
        if n is None or 8 + n > len(buf):
            return None
        reader, _ = read_message(bytes(buf[8 : 8 + n]), max_size=self.max_message_size)
        root = reader.root()
        if self.side == "request":
            return self._done(decode_connect_request(root), 8 + n)
        return self._done(decode_connect_response(root), 8 + n)

    def _done(self, head: ConnectRequest | ConnectResponse | RpcStreamStart,
              used: int) -> ConnectRequest | ConnectResponse | RpcStreamStart:
        self.head = head
        self.rest = bytes(self._buf[used:])
        self._buf = bytearray()
        return head
