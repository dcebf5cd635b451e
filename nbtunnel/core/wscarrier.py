"""WebSocket as a byte carrier (sans-I/O): what `cloudflared access` and a stream origin speak.

`cloudflared access tcp|ssh` opens a WebSocket to the hostname and sends the raw TCP bytes as
binary messages; the connector (the WebSocket server for `tcp://`, `ssh://`, ... rules) reads
masked client frames and answers with unmasked server frames. Message boundaries carry no
meaning: every data frame's payload is just the next bytes of the flow. We send at most
`MAX_MESSAGE` (16 KiB) per message, as cloudflared's own ends do: its connector reads each client
message whole and copies it into a 16 KiB buffer, silently dropping the rest of a longer one
(`websocket.Conn.Read` with `cfio.Copy`'s buffer), so a bigger message would lose data.

Half-close is a Close frame: the side whose input ended sends Close and then stops sending data;
the other side may keep sending data until its own input ends, then answers with Close. The
frame codec is wsproto's (`FrameProtocol`): its decoder yields partial frames as payload bytes
arrive, so the work and memory per `receive()` are bounded by the bytes given.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import cast

from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, ParseFailed

from nbtunnel.core.errors import ProtocolError

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
NORMAL_CLOSURE = 1000
MAX_MESSAGE = 16 * 1024  # the largest message cloudflared's connector reads without loss


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2)."""
    digest = hashlib.sha1(key.strip().encode("latin-1") + WS_GUID).digest()
    return base64.b64encode(digest).decode("ascii")


class CarrierError(ProtocolError):
    """The peer broke the WebSocket framing; `code` is the close code to answer with."""

    def __init__(self, message: str, code: int = int(CloseReason.PROTOCOL_ERROR)) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class CarrierClosed:
    """The peer sent Close: its data is complete (a half-close of the carried flow)."""

    code: int
    reason: str


class WsCarrier:
    """One end of a WebSocket carrying a byte flow; `client=True` masks what it sends."""

    def __init__(self, *, client: bool) -> None:
        self.client = client
        self._proto = FrameProtocol(client=client, extensions=[])
        self._replies = bytearray()
        self.close_sent = False
        self.close_received: CarrierClosed | None = None

    def receive(self, data: bytes) -> list[bytes | CarrierClosed]:
        """Feed bytes from the peer; returns payload chunks and at most one CarrierClosed.

        Pings are answered (see `data_to_send`); after Close, further bytes are ignored.
        Raises CarrierError on bad framing (including unmasked frames from a client).
        """
        if self.close_received is not None:
            return []
        self._proto.receive_bytes(data)
        out: list[bytes | CarrierClosed] = []
        try:
            for frame in self._proto.received_frames():
                op = frame.opcode
                if op is Opcode.PING:
                    if not self.close_sent:
                        self._replies += self._proto.pong(cast(bytes, frame.payload))
                elif op is Opcode.CLOSE:
                    code, reason = cast(tuple[int, str], frame.payload)
                    self.close_received = CarrierClosed(int(code), reason)
                    out.append(self.close_received)
                    break
                elif op is Opcode.PONG:
                    continue
                else:
                    payload = cast(bytes | str, frame.payload)
                    chunk = payload.encode() if isinstance(payload, str) else bytes(payload)
                    if chunk:
                        out.append(chunk)
        except ParseFailed as exc:
            raise CarrierError(f"bad WebSocket frame: {exc}", int(exc.code)) from exc
        return out

    def data_to_send(self) -> bytes:
        """Control replies (pongs) owed to the peer since the last call."""
        out, self._replies = bytes(self._replies), bytearray()
        return out

    def send(self, data: bytes) -> bytes:
        """`data` as binary messages of at most MAX_MESSAGE bytes (never after our Close)."""
        if self.close_sent:
            raise ProtocolError("the carrier's send side is closed")
        return b"".join(bytes(self._proto.send_data(data[i:i + MAX_MESSAGE], fin=True))
                        for i in range(0, len(data), MAX_MESSAGE))

    def ping(self) -> bytes:
        return b"" if self.close_sent else bytes(self._proto.ping())

    def close(self, code: int = NORMAL_CLOSURE, reason: str = "") -> bytes:
        """Our Close frame (once): our side of the flow is complete."""
        if self.close_sent:
            return b""
        self.close_sent = True
        return bytes(self._proto.close(code, reason or None))

    @property
    def finished(self) -> bool:
        """Both Close frames went through: the WebSocket is done."""
        return self.close_sent and self.close_received is not None
