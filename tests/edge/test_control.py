"""Registration handling (ControlHandler) on the in-memory pair."""

from __future__ import annotations

import asyncio

from nbtunnel.core.registration import RegistrationResult, UnregisterCompleted
from nbtunnel.core.schema import (
    ClientInfo,
    ConnectionDetails,
    ConnectionOptions,
    RegisterConnectionParams,
    RegistrationError,
    TunnelAuth,
)

from .conftest import EdgeParts, register


async def test_registration_joins_the_registry(parts: EdgeParts) -> None:
    edge_end, connector_end = parts.connect()
    _, response = await register(connector_end, parts.tunnel, index=2)
    assert isinstance(response, ConnectionDetails) and response.location_name == "LOC"
    [live] = parts.registry.connections(parts.tunnel.id)
    assert (live.conn_index, live.protocol, live.transport) == (2, "quic", edge_end)
    assert parts.registry.pick(parts.tunnel.id) is live
    assert [what for what, _ in parts.changes] == ["registered"]


async def test_wrong_secret_is_refused_and_the_connection_closed(parts: EdgeParts) -> None:
    _edge_end, connector_end = parts.connect()
    _, response = await register(connector_end, parts.tunnel, secret=b"x" * 32)
    assert isinstance(response, RegistrationError)
    assert response.cause == "Unauthorized: Invalid tunnel secret"
    assert not response.should_retry
    await asyncio.wait_for(connector_end.wait_closed(), 5)  # after the answer lingered
    assert "Invalid tunnel secret" in connector_end.close_reason
    assert parts.registry.connections() == []


async def test_unregister_drains_then_closes(parts: EdgeParts) -> None:
    _edge_end, connector_end = parts.connect()
    fake, _ = await register(connector_end, parts.tunnel)
    [live] = parts.registry.connections(parts.tunnel.id)
    fake.rpc.unregister()
    assert any(isinstance(e, UnregisterCompleted) for e in await fake.call())
    assert live.draining and parts.registry.pick(parts.tunnel.id) is None
    await asyncio.wait_for(connector_end.wait_closed(), 5)  # nothing in flight: it closes
    assert "unregistered" in connector_end.close_reason
    await asyncio.wait_for(parts.tasks[0], 5)
    assert parts.registry.connections() == []
    assert [what for what, _ in parts.changes] == ["registered", "draining", "closed"]


async def test_reconnect_of_the_same_index_replaces_the_stale_connection(
    parts: EdgeParts,
) -> None:
    old_edge, old_connector = parts.connect()
    await register(old_connector, parts.tunnel, index=1)
    _, new_connector = parts.connect()
    await register(new_connector, parts.tunnel, index=1)
    await asyncio.wait_for(old_connector.wait_closed(), 5)
    assert "replaced by a newer connection" in old_connector.close_reason
    [live] = parts.registry.connections(parts.tunnel.id)
    assert live.transport is not old_edge


async def test_a_second_registration_on_one_connection_is_refused(parts: EdgeParts) -> None:
    _, connector_end = parts.connect()
    fake, _ = await register(connector_end, parts.tunnel)
    fake.rpc.register(_params(parts))
    [result] = await fake.call()
    assert isinstance(result, RegistrationResult)
    assert isinstance(result.response, RegistrationError)
    assert result.response.cause == "EDUPCONN"


async def test_no_control_stream_closes_the_connection(parts: EdgeParts) -> None:
    parts.control.registration_timeout = 60.0
    edge_end, connector_end = parts.connect()
    connector_end.close(0, "gone before registering")
    await asyncio.wait_for(parts.tasks[0], 5)
    assert edge_end.closed and parts.registry.connections() == []


def _params(parts: EdgeParts) -> RegisterConnectionParams:
    t = parts.tunnel
    return RegisterConnectionParams(TunnelAuth(t.account_tag, t.secret), t.id.bytes, 0,
                                    ConnectionOptions(ClientInfo(b"c" * 16, [], "test", "a")))
