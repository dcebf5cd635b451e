"""Opening a tunnel: check the arguments, pick the edge, get a quick tunnel, start a connector.

The work runs on the runtime's loop thread. One tunnel per target: opening the same target
again returns the running tunnel.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from nbtunnel.api.edges import EdgeSettings, resolve_edge
from nbtunnel.api.errors import TunnelError
from nbtunnel.api.registry import registry
from nbtunnel.api.runtime import Runtime, get_runtime
from nbtunnel.api.targets import normalize_target
from nbtunnel.api.tunnel import Tunnel
from nbtunnel.connector.ingress import Ingress
from nbtunnel.core.errors import NbtunnelError


async def _astart(rt: Runtime, service: str, target: int | str, settings: EdgeSettings,
                  ha_connections: int, protocol: str, wait: bool, timeout: float) -> Tunnel:
    from nbtunnel.connector.quick import request_quick_tunnel
    from nbtunnel.connector.supervisor import Connector, ConnectorConfig

    existing = registry.get(service)
    if existing is None:
        if settings.edge is None:
            edge = await rt.ensure_local_edge()
            edges = [edge.quic_address]
            cacert: str | None = str(edge.ca_path)
            quick_service: str | None = edge.api_url
            front = edge.public_address
            label = (f"the embedded local edge (udp {edges[0][0]}:{edges[0][1]}, "
                     f"front {edge.api_url})")
        else:
            edges, cacert, quick_service = [settings.edge], settings.cacert, settings.quick_service
            assert quick_service is not None
            parts = urlsplit(quick_service)
            front = (parts.hostname or settings.edge[0], parts.port or 80)
            label = f"edge {settings.edge[0]}:{settings.edge[1]} (from {settings.source})"
        assert quick_service is not None
        try:
            quick = await request_quick_tunnel(quick_service)
        except NbtunnelError as exc:
            raise TunnelError(f"cannot open a quick tunnel on {label}: {exc}") from exc
        url = f"http://{quick.hostname}" + ("" if front[1] == 80 else f":{front[1]}")
        connector = Connector(ConnectorConfig(
            edge=list(edges), credentials=quick.credentials, ingress=Ingress.single(service),
            cacert=cacert, ha_connections=ha_connections, grace_period=5.0,
            config_flags={"protocol": protocol}))
        existing = Tunnel(rt, service, target, quick.hostname, url, label, front, connector,
                          ha_connections, protocol)
        connector.subscribe(existing._on_event)
        registry[service] = existing
        existing._task = rt.spawn(existing._run(), name=f"nbtunnel-tunnel-{quick.hostname}")
        if wait:  # an existing tunnel is returned as it is, even while it reconnects
            await existing._wait_ready(1, timeout)
    return existing


def _prepare(target: int | str, edge: str | None, cacert: str | None, quick_service: str | None,
             ha_connections: int, protocol: str) -> tuple[str, EdgeSettings]:
    service = normalize_target(target)
    if ha_connections < 1:
        raise TunnelError("ha_connections must be at least 1")
    if protocol not in ("quic", "auto"):
        raise TunnelError(f"protocol {protocol!r} is not supported (quic, auto)")
    return service, resolve_edge(edge, cacert, quick_service)


def open_tunnel(target: int | str, *, edge: str | None = None, cacert: str | None = None,
                quick_service: str | None = None, ha_connections: int = 4,
                protocol: str = "quic", wait: bool = True, timeout: float = 30.0) -> Tunnel:
    """Publish target through a quick tunnel; returns once a connection is registered."""
    service, settings = _prepare(target, edge, cacert, quick_service, ha_connections, protocol)
    rt = get_runtime()
    return rt.call(_astart(rt, service, target, settings, ha_connections, protocol, wait,
                           timeout))


async def aopen_tunnel(target: int | str, *, edge: str | None = None, cacert: str | None = None,
                       quick_service: str | None = None, ha_connections: int = 4,
                       protocol: str = "quic", wait: bool = True,
                       timeout: float = 30.0) -> Tunnel:
    """Async open_tunnel: the connector still runs on the runtime thread, not on your loop."""
    service, settings = _prepare(target, edge, cacert, quick_service, ha_connections, protocol)
    rt = get_runtime()
    coro = _astart(rt, service, target, settings, ha_connections, protocol, wait, timeout)
    if rt.on_loop_thread:
        return await coro
    return await asyncio.wrap_future(rt.submit(coro))
