"""Typed transport errors: callers catch these instead of library exceptions.

Every error keeps the original library exception (or reason text) as ``cause`` so a log line
can say *why* a handshake failed or a stream died without importing qh3/aioquic types.
"""

from __future__ import annotations

from nbtunnel.core.errors import NbtunnelError


class TransportError(NbtunnelError):
    """Base class of tunnel transport failures (QUIC, HTTP/2, in-memory)."""

    def __init__(self, message: str, cause: BaseException | str | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class HandshakeError(TransportError):
    """The QUIC/TLS handshake failed (bad certificate, ALPN, key share, peer refused...)."""


class ConnectTimeoutError(HandshakeError):
    """No completed handshake within ``QuicSettings.handshake_timeout``."""


class TransportClosedError(TransportError):
    """The connection is closed (locally, by the peer, or by the idle timer)."""


class StreamResetError(TransportError):
    """The peer reset the stream (RESET_STREAM) with application error ``code``."""

    def __init__(self, code: int, cause: BaseException | str | None = None) -> None:
        super().__init__(f"stream reset by peer (code {code})", cause)
        self.code = code


class RpcError(TransportError):
    """A transport-level RPC (a configuration push) failed: the peer answered with an
    exception or ended its stream without answering."""


class StreamAbortedError(TransportError):
    """A write on a stream this side already reset: nothing more is ever sent on it."""
