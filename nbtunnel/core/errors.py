"""Base exceptions shared by every nbtunnel package."""

from __future__ import annotations


class NbtunnelError(Exception):
    """Root of every error nbtunnel raises on purpose."""


class ProtocolError(NbtunnelError):
    """The peer sent something the protocol does not allow."""


class DecodeError(ProtocolError):
    """Bytes on the wire could not be decoded."""


class RpcError(ProtocolError):
    """A Cap'n Proto RPC call failed; ``reason`` is the peer's text."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
