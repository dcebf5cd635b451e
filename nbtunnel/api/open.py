"""Opening a tunnel: check the arguments, pick the edge, get a quick tunnel, start a connector.

The work runs on the runtime's loop thread. One tunnel per target: opening the same target
again returns the running tunnel.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

from nbtunnel.api.edges import EdgeSettings, resolve_edge
from nbtunnel.api.errors import TunnelError
from nbtunnel.api.options import TunnelOptions
from nbtunnel.api.probe import plan_origin, quick_ingress
from nbtunnel.api.registry import registry
from nbtunnel.api.runtime import Runtime, get_runtime
from nbtunnel.api.targets import normalize_target
from nbtunnel.api.tunnel import Tunnel
from nbtunnel.connector.access_control import AccessControl, parse_auth
from nbtunnel.connector.inspector import Inspector
from nbtunnel.core.errors import NbtunnelError

log = logging.getLogger("nbtunnel.tunnel")


async def _astart(rt: Runtime, service: str, target: int | str, settings: EdgeSettings,
                  opts: TunnelOptions, wait: bool) -> Tunnel:
    from nbtunnel.connector.quick import request_quick_tunnel
    from nbtunnel.connector.supervisor import Connector, ConnectorConfig

    existing = registry.get(service)
    if existing is not None:  # returned as it is, even while it reconnects
        return existing
    host_header, notes = await plan_origin(service, opts)
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
        where = (f"the quick-tunnel API {quick_service}" + ("" if opts.quick_service else
                 " (derived from the edge address; set --quick-service / quick_service= if "
                 "the API is elsewhere)"))
        raise TunnelError(f"cannot open a quick tunnel on {label}: {where} failed: {exc}") \
            from exc
    url = f"http://{quick.hostname}" + ("" if front[1] == 80 else f":{front[1]}")
    ingress = quick_ingress(service, host_header)
    access = AccessControl(parse_auth(opts.auth)) if opts.auth else None
    connector = Connector(ConnectorConfig(
        edge=list(edges), credentials=quick.credentials, ingress=ingress, cacert=cacert,
        ha_connections=opts.ha_connections, grace_period=opts.grace_period,
        quic_backend=opts.quic_backend, protocol=opts.protocol,
        config_flags={"protocol": opts.protocol}, access=access,
        inspector=Inspector() if opts.inspect else None))
    if access is not None and access.spec.kind == "token":
        notes.append(f"--auth token: open {url}/?nbtunnel_token={access.spec.token} once in "
                     "your browser (it sets a cookie), or send Authorization: Bearer "
                     f"{access.spec.token} (shown once)")
    tunnel = Tunnel(rt, service, target, quick.hostname, url, label, front, connector, opts,
                    notes)
    for note in notes:
        if "nbtunnel_token=" not in note:  # the token goes to the caller once, never to logs
            log.info("%s: %s", url, note)
    connector.subscribe(tunnel._on_event)
    registry[service] = tunnel
    tunnel._task = rt.spawn(tunnel._run(), name=f"nbtunnel-tunnel-{quick.hostname}")
    if wait:
        await tunnel._wait_ready(1, opts.timeout)
    return tunnel


def _prepare(target: int | str, options: dict[str, Any]) -> tuple[str, TunnelOptions,
                                                                  EdgeSettings]:
    service = normalize_target(target)
    opts = TunnelOptions(**options).check()
    return service, opts, resolve_edge(opts.edge, opts.cacert, opts.quick_service)


def open_tunnel(target: int | str, *, wait: bool = True, **options: Any) -> Tunnel:
    """Publish target through a quick tunnel; returns once a connection is registered.

    options: any field of `nbtunnel.api.options.TunnelOptions`: edge, cacert, quick_service,
    ha_connections, protocol, grace_period, quic_backend, http_host_header, jupyter, auth,
    inspect, timeout."""
    service, opts, settings = _prepare(target, options)
    rt = get_runtime()
    return rt.call(_astart(rt, service, target, settings, opts, wait))


async def aopen_tunnel(target: int | str, *, wait: bool = True, **options: Any) -> Tunnel:
    """Async open_tunnel: the connector still runs on the runtime thread, not on your loop."""
    service, opts, settings = _prepare(target, options)
    rt = get_runtime()
    coro = _astart(rt, service, target, settings, opts, wait)
    if rt.on_loop_thread:
        return await coro
    return await asyncio.wrap_future(rt.submit(coro))
