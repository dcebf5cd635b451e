"""Remote configuration over QUIC: an edge-opened RPC stream carrying ``updateConfiguration``.

The edge opens a fresh bidi stream, writes the 6-byte RPC signature and acts as the RPC client
against the connector's ``CloudflaredServer``, as Cloudflare's edge does; the connector answers
``{latestAppliedVersion, err}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from nbtunnel.core.errors import ProtocolError
from nbtunnel.core.registration import (
    CallFailed,
    CloudflaredServer,
    ConfigurationClient,
    ConfigurationUpdated,
    PeerAborted,
    UpdateConfigurationRequested,
)
from nbtunnel.core.streams import RPC_SIGNATURE
from nbtunnel.transport.base import ConfigHandler
from nbtunnel.transport.errors import RpcError, TransportError

if TYPE_CHECKING:
    from nbtunnel.transport.quic.stream import QuicStream

log = logging.getLogger("nbtunnel.transport.quic")

RPC_STREAM_TIMEOUT = 5.0
"""The connector gives an edge-opened RPC stream this long in all."""


class QuicConfigurationPush:
    """Connector role: the edge's RPC stream, its signature already read."""

    def __init__(self, stream: QuicStream, first: bytes) -> None:
        self.stream = stream
        self._first = first

    async def serve(self, apply: ConfigHandler) -> None:
        """Answer ``updateConfiguration`` calls until the edge ends the stream (or 5 s pass)."""
        stream = self.stream
        server = CloudflaredServer()
        data = self._first
        try:
            async with asyncio.timeout(RPC_STREAM_TIMEOUT):
                while True:
                    if data:
                        for event in server.receive_data(data):
                            if isinstance(event, UpdateConfigurationRequested):
                                version, err = apply(event.version, event.config)
                                server.answer_update_configuration(event.question_id, version,
                                                                   err)
                        out = server.data_to_send()
                        if out:
                            await stream.write(out)
                    data = await stream.read(65536)
                    if not data:
                        break
        except (TimeoutError, ProtocolError, TransportError) as exc:
            log.debug("rpc stream ended: %s", exc or "timeout")
        with contextlib.suppress(Exception):
            stream.write_eof()


async def push_configuration(stream: QuicStream, version: int, config: bytes) -> tuple[int, str]:
    """Edge role: ``updateConfiguration`` on a fresh stream; ``(applied version, error)``."""
    client = ConfigurationClient()
    try:
        client.update_configuration(version, config)
        await stream.write(RPC_SIGNATURE + client.data_to_send())
        while True:
            data = await stream.read(65536)
            if not data:
                raise RpcError("the connector closed the RPC stream without answering")
            for event in client.receive_data(data):
                if isinstance(event, ConfigurationUpdated):
                    client.close()
                    out = client.data_to_send()
                    with contextlib.suppress(TransportError):
                        if out:
                            await stream.write(out)
                        stream.write_eof()
                    return event.latest_applied_version, event.error
                if isinstance(event, CallFailed | PeerAborted):
                    raise RpcError(event.reason)
            out = client.data_to_send()
            if out:
                await stream.write(out)
    except BaseException:
        with contextlib.suppress(Exception):
            stream.reset(0)
        raise
