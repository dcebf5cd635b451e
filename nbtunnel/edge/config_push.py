"""Push a remote configuration to one live connector connection (`updateConfiguration`).

How it travels is the transport's business (an RPC stream on QUIC, an `update-configuration`
request on HTTP/2); the connector answers `{latestAppliedVersion, err}` and a non-empty `err`
means it kept its old configuration. A failure or a timeout becomes the result's error text.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from nbtunnel.core.errors import ProtocolError
from nbtunnel.edge.registry import LiveConnection
from nbtunnel.transport.errors import TransportError

PUSH_TIMEOUT = 5.0


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
            applied, err = await live.transport.update_configuration(version, config)
    except TimeoutError:
        applied, err = -1, "the connector did not answer updateConfiguration in time"
    except (TransportError, ProtocolError) as exc:
        applied, err = -1, f"push failed: {exc}"
    return PushResult(str(live.connector_id), live.conn_index, applied, err)
