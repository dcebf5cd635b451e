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
from nbtunnel.core.connect_codec import decode_head, encode_head
from nbtunnel.core.errors import DecodeError

DATA_SIGNATURE = bytes.fromhex("0a36cd12a13e")
RPC_SIGNATURE = bytes.fromhex("52bb825cdb65")
PROTOCOL_VERSION = b"01"
PREAMBLE = DATA_SIGNATURE + PROTOCOL_VERSION
DEFAULT_MAX_HEAD_SIZE = 256 * 1024
_PREAMBLE_ONE_SEGMENT = PREAMBLE + bytes(4)  # and a Cap'n Proto frame of one segment


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
    return [(e.text(0), e.text_raw(1)) for e in sr.structs(i)]


def encode_connect_request(req: ConnectRequest) -> bytes:
    """Preamble + ConnectRequest (root: 1 data word, 2 pointers)."""
    data = (int(req.type) & 0xFFFF).to_bytes(8, "little")
    return PREAMBLE + encode_head(data, req.dest, req.metadata, True)


def encode_connect_response(resp: ConnectResponse) -> bytes:
    """Preamble + ConnectResponse (root: 0 data words, 2 pointers), as cloudflared writes it:
    an error response without metadata has a null metadata list (Go nil slice), a success
    without metadata an empty one."""
    return PREAMBLE + encode_head(b"", resp.error, resp.metadata,
                                  bool(resp.metadata or not resp.error))


def encode_connect_request_generic(req: ConnectRequest) -> bytes:
    """:func:`encode_connect_request` through the generic builder (the reference the fast
    encoder is tested against)."""
    mb = MessageBuilder()
    root = mb.init_root(1, 2)
    root.set_text(0, req.dest)
    root.set_u16(0, int(req.type))
    _write_metadata(root, 1, req.metadata)
    return PREAMBLE + mb.to_bytes()


def encode_connect_response_generic(resp: ConnectResponse) -> bytes:
    """:func:`encode_connect_response` through the generic builder."""
    mb = MessageBuilder()
    root = mb.init_root(0, 2)
    root.set_text(0, resp.error)
    if resp.metadata or not resp.error:
        _write_metadata(root, 1, resp.metadata)
    return PREAMBLE + mb.to_bytes()


_TYPES = tuple(ConnectionType)  # values 0, 1, 2: an index is cheaper than the enum's call


def _connection_type(kind: int) -> ConnectionType:
    if 0 <= kind < len(_TYPES):
        return _TYPES[kind]
    raise DecodeError(f"unknown connection type {kind}")


def decode_connect_request(root: StructReader) -> ConnectRequest:
    kind = root.u16(0)
    return ConnectRequest(root.text(0), _connection_type(kind), _read_metadata(root, 1))


def decode_connect_response(root: StructReader) -> ConnectResponse:
    return ConnectResponse(root.text(0), _read_metadata(root, 1))


def decode_request_message(message: bytes, max_size: int = DEFAULT_MAX_HEAD_SIZE,
                           *, fast: bool = True) -> ConnectRequest:
    """One framed ConnectRequest: the one-pass reader for the usual shape, else the generic
    one (``fast=False``: always the generic one, the reference in tests)."""
    got = decode_head(message, 1) if fast else None
    if got is None:
        reader, _ = read_message(message, max_size=max_size)
        return decode_connect_request(reader.root())
    kind, dest, metadata = got
    return ConnectRequest(dest, _connection_type(kind), metadata)


def decode_response_message(message: bytes, max_size: int = DEFAULT_MAX_HEAD_SIZE,
                            *, fast: bool = True) -> ConnectResponse:
    """One framed ConnectResponse (see :func:`decode_request_message`)."""
    got = decode_head(message, 0) if fast else None
    if got is None:
        reader, _ = read_message(message, max_size=max_size)
        return decode_connect_response(reader.root())
    return ConnectResponse(got[1], got[2])


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
        if not self._buf and data[:12] == _PREAMBLE_ONE_SEGMENT and len(data) >= 16:
            # the usual case: the whole head in the first read, one segment
            end = 16 + 8 * int.from_bytes(data[12:16], "little")
            if end - 8 <= self.max_message_size and end <= len(data):
                message = bytes(data[8:end])
                head: ConnectRequest | ConnectResponse = (
                    decode_request_message(message, self.max_message_size)
                    if self.side == "request" else
                    decode_response_message(message, self.max_message_size))
                self.head = head
                self.rest = bytes(data[end:])
                return head
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
        message = bytes(buf[8 : 8 + n])
        if self.side == "request":
            return self._done(decode_request_message(message, self.max_message_size), 8 + n)
        return self._done(decode_response_message(message, self.max_message_size), 8 + n)

    def _done(self, head: ConnectRequest | ConnectResponse | RpcStreamStart,
              used: int) -> ConnectRequest | ConnectResponse | RpcStreamStart:
        self.head = head
        self.rest = bytes(self._buf[used:])
        self._buf = bytearray()
        return head
