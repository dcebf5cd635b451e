"""Push a remote configuration to one live connector connection (`updateConfiguration`).

The edge opens a fresh bidi stream, writes the 6-byte RPC signature and acts as the RPC
client against the connector's `CloudflaredServer`, as Cloudflare's edge does. The connector
answers `{latestAppliedVersion, err}`; a non-empty `err` means it kept its old configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from nbtunnel.core.errors import NbtunnelError, ProtocolError
from nbtunnel.core.registration import (
    CallFailed,
    ConfigurationClient,
    ConfigurationUpdated,
    PeerAborted,
)
from nbtunnel.core.streams import RPC_SIGNATURE
from nbtunnel.edge.registry import LiveConnection
from nbtunnel.transport.errors import TransportError

PUSH_TIMEOUT = 5.0


class ConfigPushError(NbtunnelError):
    """The connector could not be asked (stream failed, timeout, RPC exception)."""


@dataclass(frozen=True)
class PushResult:
    connector_id: str
    conn_index: int
    applied_version: int
    error: str

    def describe(self) -> dict[str, object]:
        return {"connector_id": self.connector_id, "conn_index": self.conn_index,
                "applied_version": self.applied_version, "error": self.error or None}


async def push_configuration(
    live: LiveConnection, version: int, config: bytes, *, timeout: float = PUSH_TIMEOUT
) -> PushResult:
    """Ask one connection to apply `config` as `version`; errors become `error` text."""
    try:
        async with asyncio.timeout(timeout):
            applied, err = await _push(live, version, config)
    except TimeoutError:
        applied, err = -1, "the connector did not answer updateConfiguration in time"
    except (ConfigPushError, TransportError, ProtocolError) as exc:
        applied, err = -1, f"push failed: {exc}"
    return PushResult(str(live.connector_id), live.conn_index, applied, err)


async def _push(live: LiveConnection, version: int, config: bytes) -> tuple[int, str]:
    if live.protocol == "http2":  # no RPC stream over HTTP/2: an update-configuration request
        applied, err = await live.transport.update_configuration(version, config)
        return int(applied), str(err)
    stream = live.transport.open_stream()
    client = ConfigurationClient()
    try:
        client.update_configuration(version, config)
        await stream.write(RPC_SIGNATURE + client.data_to_send())
        while True:
            data = await stream.read(65536)
            if not data:
                raise ConfigPushError("the connector closed the RPC stream without answering")
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
                    raise ConfigPushError(event.reason)
            out = client.data_to_send()
            if out:
                await stream.write(out)
    except BaseException:
        with contextlib.suppress(Exception):
            stream.reset(0)
        raise
