"""Opening a tunnel: check the arguments, pick the edge, get a quick tunnel, start a connector.

The work runs on the runtime's loop thread. One tunnel per target: opening the same target
again returns the running tunnel.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any
from urllib.parse import urlsplit

from nbtunnel.access.instructions import EdgeReach, instructions
from nbtunnel.api.edges import EdgeSettings, resolve_edge
from nbtunnel.api.errors import TargetError, TunnelError
from nbtunnel.api.options import TunnelOptions
from nbtunnel.api.probe import plan_origin, quick_ingress
from nbtunnel.api.registry import registry
from nbtunnel.api.runtime import Runtime, get_runtime
from nbtunnel.api.targets import normalize_target
from nbtunnel.api.tunnel import Tunnel
from nbtunnel.connector.access_control import AccessControl, parse_auth
from nbtunnel.connector.inspector import Inspector
from nbtunnel.connector.stream_origin import is_stream_service
from nbtunnel.core.errors import NbtunnelError

log = logging.getLogger("nbtunnel.tunnel")


async def _astart(rt: Runtime, services: list[str], target: int | str, settings: EdgeSettings,
                  opts: TunnelOptions, wait: bool) -> Tunnel:
    from nbtunnel.connector.quick import request_quick_tunnel
    from nbtunnel.connector.supervisor import Connector, ConnectorConfig

    open_already = [registry[s] for s in services if s in registry]
    if open_already:
        if len(services) == 1:  # returned as it is, even while it reconnects
            return open_already[0]
        raise TunnelError(f"{open_already[0].service} is already published at "
                          f"{open_already[0].url}; stop it first")
    if len(services) > 1 and settings.edge is not None:
        raise TunnelError("several targets on one connector need the embedded local edge (it "
                          "adds a hostname per target); on another edge open one per target")
    plans = [await plan_origin(s, opts) for s in services]
    notes = [note for _, found in plans for note in found]
    if settings.edge is None:
        edge = await rt.ensure_local_edge()
        edges = [edge.quic_address]
        cacert: str | None = str(edge.ca_path)
        quick_service: str | None = edge.api_url
        front = edge.public_address
        reach = EdgeReach(edge.https_address, cacert)
        label = (f"the embedded local edge (udp {edges[0][0]}:{edges[0][1]}, "
                 f"front {edge.api_url})")
    else:
        edges, cacert, quick_service = [settings.edge], settings.cacert, settings.quick_service
        assert quick_service is not None
        parts = urlsplit(quick_service)
        front = (parts.hostname or settings.edge[0], parts.port or 80)
        reach = EdgeReach(None, settings.cacert)
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
    hostnames = [quick.hostname] + [await _add_hostname(edge, quick.credentials.tunnel_id)
                                    for _ in services[1:]]

    def url_of(hostname: str) -> str:
        return f"http://{hostname}" + ("" if front[1] == 80 else f":{front[1]}")

    ingress = quick_ingress(list(zip(hostnames, services, [h for h, _ in plans], strict=True)))
    access = AccessControl(parse_auth(opts.auth)) if opts.auth else None
    connector = Connector(ConnectorConfig(
        edge=list(edges), credentials=quick.credentials, ingress=ingress, cacert=cacert,
        ha_connections=opts.ha_connections, grace_period=opts.grace_period,
        quic_backend=opts.quic_backend, protocol=opts.protocol,
        config_flags={"protocol": opts.protocol}, access=access,
        inspector=Inspector() if opts.inspect else None))
    url = url_of(quick.hostname)
    if access is not None and access.spec.kind == "token":
        notes.append(f"--auth token: open {url}/?nbtunnel_token={access.spec.token} once in "
                     "your browser (it sets a cookie), or send Authorization: Bearer "
                     f"{access.spec.token} (shown once)")
    routes = [(h, url_of(h), s) for h, s in zip(hostnames, services, strict=True)]
    tunnel = Tunnel(rt, services[0], target, quick.hostname, url, label, front, connector, opts,
                    notes, routes)
    for extra in hostnames[1:]:
        tunnel.add_cleanup(functools.partial(edge.store.remove_route, extra))
    for note in notes:
        if "nbtunnel_token=" not in note:  # the token goes to the caller once, never to logs
            log.info("%s: %s", url, note)
    helps = [instructions(h, s, reach) for h, s in zip(hostnames, services, strict=True)
             if is_stream_service(s)]
    if helps:
        tunnel.access_help = "\n".join(helps)
    connector.subscribe(tunnel._on_event)
    for service in services:
        registry[service] = tunnel
    tunnel._task = rt.spawn(tunnel._run(), name=f"nbtunnel-tunnel-{quick.hostname}")
    if wait:
        await tunnel._wait_ready(1, opts.timeout)
    return tunnel


async def _add_hostname(edge: Any, tunnel_id: Any) -> str:
    """One more random hostname routed to the tunnel (embedded edge: its store is ours)."""
    from nbtunnel.edge.words import random_hostname

    while True:
        hostname = random_hostname(edge.config.domain)
        if not edge.store.hostname_taken(hostname):
            await edge.store.add_route(hostname, tunnel_id)
            return hostname


def _prepare(target: int | str | list[int | str] | tuple[int | str, ...],
             options: dict[str, Any]) -> tuple[list[str], TunnelOptions, EdgeSettings]:
    targets = list(target) if isinstance(target, list | tuple) else [target]
    if not targets:
        raise TargetError("no target given")
    services = [normalize_target(t) for t in targets]
    if len(set(services)) < len(services):
        raise TargetError(f"the same target twice in {targets!r}")
    opts = TunnelOptions(**options).check()
    return services, opts, resolve_edge(opts.edge, opts.cacert, opts.quick_service)


Targets = int | str | list[int | str] | tuple[int | str, ...]


def open_tunnel(target: Targets, *, wait: bool = True, **options: Any) -> Tunnel:
    """Publish target through a quick tunnel; returns once a connection is registered.

    Several targets (`open_tunnel([8888, 8050])`) share one connector and one set of HA
    connections, each with a hostname of its own (embedded local edge only).

    options: any field of `nbtunnel.api.options.TunnelOptions`: edge, cacert, quick_service,
    ha_connections, protocol, grace_period, quic_backend, http_host_header, jupyter, auth,
    inspect, timeout."""
    services, opts, settings = _prepare(target, options)
    rt = get_runtime()
    known = {id(registry[s]) for s in services if s in registry}
    tunnel = rt.call(_astart(rt, services, _first(target), settings, opts, wait))
    if id(tunnel) not in known and tunnel.access_help:
        print(tunnel.access_help)  # a TCP service: the user needs these commands
    return tunnel


async def aopen_tunnel(target: Targets, *, wait: bool = True, **options: Any) -> Tunnel:
    """Async open_tunnel: the connector still runs on the runtime thread, not on your loop."""
    services, opts, settings = _prepare(target, options)
    rt = get_runtime()
    coro = _astart(rt, services, _first(target), settings, opts, wait)
    if rt.on_loop_thread:
        return await coro
    return await asyncio.wrap_future(rt.submit(coro))


def _first(target: Targets) -> int | str:
    return target[0] if isinstance(target, list | tuple) else target
