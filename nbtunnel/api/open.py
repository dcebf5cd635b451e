"""Opening a tunnel: check the arguments, pick the edge, get a quick tunnel, start a connector.

The edge comes from `resolve_edge` (argument, $NBTUNNEL_EDGE, config.json, else `auto`):
Cloudflare's edge (discovery, the quick API, one connection, an `https://` URL), the embedded
local edge, or a self-hosted edge. `auto` tries Cloudflare within a few seconds and otherwise
starts the local edge, keeping the reason on the tunnel (`Tunnel.edge_note`). With `token=`
the tunnel is a named one (no quick API; ingress pushed by the edge). The work runs on the
runtime's loop thread. One tunnel per target: opening the same target again returns it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field, replace
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
from nbtunnel.connector.cloudflare import (
    AUTO_BUDGET,
    LOCAL_NOTICE,
    PUBLIC_NOTICE,
    QUICK_HA_CONNECTIONS,
    CloudflareUnavailable,
    fallback_line,
    find_edge,
    open_quick,
)
from nbtunnel.connector.inspector import Inspector
from nbtunnel.connector.quick import request_quick_tunnel
from nbtunnel.connector.stream_origin import is_stream_service
from nbtunnel.connector.supervisor import ConnectorConfig
from nbtunnel.core.credentials import Credentials, CredentialsError
from nbtunnel.core.errors import NbtunnelError
from nbtunnel.core.http1 import http_url

log = logging.getLogger("nbtunnel.tunnel")


@dataclass
class _Plan:
    """Where the connector goes (edge, trust, HA count, credentials) and what the Tunnel
    shows; `_astart` adds what is served (ingress, access, inspector)."""

    creds: Credentials
    ha: int
    where: dict[str, Any]  # ConnectorConfig's edge, cacert, pool, trust, embedded_edge
    hostname: str
    url: str
    label: str
    front: tuple[str, int]
    public: bool
    reach: str
    note: str = ""
    local_edge: Any = None  # the embedded edge (several targets add hostnames to its store)
    extra_hostnames: list[str] = field(default_factory=list)
    access: EdgeReach = field(default_factory=EdgeReach)  # how TCP-service clients get there


async def _local(rt: Runtime, creds: Credentials | None, opts: TunnelOptions,
                 note: str = "", targets: int = 1) -> _Plan:
    edge = await rt.ensure_local_edge()
    label = (f"the embedded local edge (udp {edge.quic_address[0]}:{edge.quic_address[1]}, "
             f"front {edge.api_url})")
    hostname = ""
    if creds is None:
        try:
            quick = await request_quick_tunnel(edge.api_url)
        except NbtunnelError as exc:
            raise TunnelError(f"cannot open a quick tunnel on {label}: {exc}") from exc
        creds, hostname = quick.credentials, quick.hostname
    port = edge.public_address[1]
    url = http_url(hostname, port) if hostname else ""
    where = {"edge": [edge.quic_address], "cacert": str(edge.ca_path), "embedded_edge": True}
    extra = [await _add_hostname(edge, creds.tunnel_id) for _ in range(targets - 1)]
    return _Plan(creds, opts.ha_connections, where, hostname, url, label, edge.public_address,
                 False, LOCAL_NOTICE, note, edge, extra,
                 EdgeReach(edge.https_address, str(edge.ca_path)))


async def _cloudflare(settings: EdgeSettings, creds: Credentials | None,
                      opts: TunnelOptions) -> _Plan:
    options = replace(settings.cloudflare_options(opts.user_agent),
                      ip_version=opts.edge_ip_version)
    budget = AUTO_BUDGET if settings.kind == "auto" else None
    hostname = url = ""
    ha = opts.ha_connections
    if creds is None:
        edge, quick = await open_quick(options, budget=budget)
        creds, hostname, url, ha = (quick.credentials, quick.hostname, quick.url,
                                    QUICK_HA_CONNECTIONS)
    else:
        try:
            edge = await find_edge(options, *(() if budget is None else (budget,)))
        except NbtunnelError as exc:
            raise CloudflareUnavailable(str(exc)) from exc
    where = {"edge": [], "pool": edge.pool, "trust": edge.trust}
    return _Plan(creds, ha, where, hostname, url, edge.describe(), (hostname, 443), True,
                 PUBLIC_NOTICE)


async def _address(settings: EdgeSettings, creds: Credentials | None,
                   opts: TunnelOptions) -> _Plan:
    assert settings.edge is not None and settings.quick_service is not None
    label = f"edge {settings.edge[0]}:{settings.edge[1]} (from {settings.source})"
    parts = urlsplit(settings.quick_service)
    front = (parts.hostname or settings.edge[0], parts.port or 80)
    hostname = url = ""
    if creds is None:
        try:
            quick = await request_quick_tunnel(settings.quick_service,
                                               user_agent=opts.user_agent,
                                               extra_cafile=settings.cacert)
        except NbtunnelError as exc:
            api = (f"the quick-tunnel API {settings.quick_service}" + (
                "" if opts.quick_service else " (derived from the edge address; set "
                "--quick-service / quick_service= if the API is elsewhere)"))
            raise TunnelError(f"cannot open a quick tunnel on {label}: {api} failed: "
                              f"{exc}") from exc
        creds, hostname = quick.credentials, quick.hostname
        url = http_url(hostname, front[1])
    where = {"edge": [settings.edge], "cacert": settings.cacert}
    return _Plan(creds, opts.ha_connections, where, hostname, url, label, front, False,
                 f"this URL is served by {label}", access=EdgeReach(None, settings.cacert))


async def _plan(rt: Runtime, settings: EdgeSettings, creds: Credentials | None,
                opts: TunnelOptions, targets: int) -> _Plan:
    if targets > 1 and (settings.kind in ("cloudflare", "address") or creds is not None):
        raise TunnelError("several targets on one connector need the embedded local edge (it "
                          "adds a hostname per target); on another edge open one per target")
    if settings.kind == "local" or targets > 1:
        return await _local(rt, creds, opts, targets=targets)
    if settings.kind == "address":
        return await _address(settings, creds, opts)
    try:
        return await _cloudflare(settings, creds, opts)
    except CloudflareUnavailable as exc:
        if settings.kind == "cloudflare":
            raise TunnelError(f"cannot use Cloudflare's edge: {exc}") from exc
        note = fallback_line(exc)
        log.info("%s", note)
        return await _local(rt, creds, opts, note)


async def _add_hostname(edge: Any, tunnel_id: Any) -> str:
    """One more random hostname routed to the tunnel (embedded edge: its store is ours)."""
    from nbtunnel.edge.words import random_hostname

    while True:
        hostname = random_hostname(edge.config.domain)
        if not edge.store.hostname_taken(hostname):
            await edge.store.add_route(hostname, tunnel_id)
            return hostname


async def _astart(rt: Runtime, services: list[str], target: int | str, settings: EdgeSettings,
                  opts: TunnelOptions, wait: bool) -> Tunnel:
    from nbtunnel.connector.supervisor import Connector

    open_already = [registry[s] for s in services if s in registry]
    if open_already:
        if len(services) == 1:  # returned as it is, even while it reconnects
            return open_already[0]
        raise TunnelError(f"{open_already[0].service} is already published at "
                          f"{open_already[0].url}; stop it first")
    origins = [await plan_origin(s, opts) for s in services]
    notes = [note for _, found in origins for note in found]
    plan = await _plan(rt, settings, _credentials(opts.token), opts, len(services))
    hostnames = [plan.hostname, *plan.extra_hostnames]

    def url_of(hostname: str) -> str:
        return plan.url if hostname == plan.hostname else http_url(hostname, plan.front[1])

    ingress = quick_ingress(list(zip(hostnames, services, [h for h, _ in origins],
                                     strict=True)))
    access = AccessControl(parse_auth(opts.auth)) if opts.auth else None
    # on Cloudflare, QUIC falls back to HTTP/2 when UDP is blocked (Colab, Binder, offices)
    protocol = opts.protocol or ("auto" if plan.public else "quic")
    opts = replace(opts, protocol=protocol)
    config = ConnectorConfig(
        credentials=plan.creds, ingress=ingress,
        ha_connections=plan.ha, grace_period=opts.grace_period, quic_backend=opts.quic_backend,
        protocol=protocol, config_flags={"protocol": protocol}, access=access,
        inspector=Inspector() if opts.inspect else None, **plan.where)
    connector = Connector(config)
    url = plan.url
    if access is not None and access.spec.kind == "token":
        notes.append(f"--auth token: open {url or 'a tunnel URL'}/?nbtunnel_token="
                     f"{access.spec.token} once in your browser (it sets a cookie), or send "
                     f"Authorization: Bearer {access.spec.token} (shown once)")
    name = plan.hostname or f"named tunnel {config.credentials.tunnel_id}"
    routes = [(h, url_of(h), s) for h, s in zip(hostnames, services, strict=True)]
    tunnel = Tunnel(rt, services[0], target, plan.hostname, url, plan.label, plan.front,
                    connector, replace(opts, ha_connections=config.ha_connections), notes,
                    routes)
    tunnel.public, tunnel.reach, tunnel.edge_note = plan.public, plan.reach, plan.note
    for extra in plan.extra_hostnames:
        tunnel.add_cleanup(functools.partial(plan.local_edge.store.remove_route, extra))
    for note in notes:
        if "nbtunnel_token=" not in note:  # the token goes to the caller once, never to logs
            log.info("%s: %s", url or name, note)
    helps = [instructions(h, s, plan.access) for h, s in zip(hostnames, services, strict=True)
             if is_stream_service(s)]
    if helps:
        tunnel.access_help = "\n".join(helps)
    connector.subscribe(tunnel._on_event)
    for service in services:
        registry[service] = tunnel
    tunnel._task = rt.spawn(tunnel._run(), name=f"nbtunnel-tunnel-{name}")
    if wait:
        await tunnel._wait_ready(1, opts.timeout)
    return tunnel


def _credentials(token: str | None) -> Credentials | None:
    if token is None:
        return None
    try:
        return Credentials.from_token(token)
    except CredentialsError as exc:
        raise TunnelError(str(exc)) from exc


def _prepare(target: Targets, options: dict[str, Any]
             ) -> tuple[list[str], TunnelOptions, EdgeSettings]:
    targets = list(target) if isinstance(target, list | tuple) else [target]
    if not targets:
        raise TargetError("no target given")
    services = [normalize_target(t) for t in targets]
    if len(set(services)) < len(services):
        raise TargetError(f"the same target twice in {targets!r}")
    opts = TunnelOptions(**options).check()
    return services, opts, resolve_edge(opts.edge, opts.cacert, opts.quick_service,
                                        opts.region)


Targets = int | str | list[int | str] | tuple[int | str, ...]


def open_tunnel(target: Targets, *, wait: bool = True, **options: Any) -> Tunnel:
    """Publish target; returns once a connection is registered.

    Several targets (`open_tunnel([8888, 8050])`) share one connector and one set of HA
    connections, each with a hostname of its own (embedded local edge only).

    options: any field of `nbtunnel.api.options.TunnelOptions`: edge ("auto" by default:
    Cloudflare if reachable, else a local edge; "cloudflare", "local", "HOST:PORT"), token (a
    named tunnel), region, cacert, quick_service, ha_connections, protocol, grace_period,
    quic_backend, http_host_header, jupyter, auth, inspect, timeout, edge_ip_version,
    user_agent."""
    services, opts, settings = _prepare(target, options)
    rt = get_runtime()
    known = {id(registry[s]) for s in services if s in registry}
    tunnel = rt.call(_astart(rt, services, _first(target), settings, opts, wait))
    if id(tunnel) not in known:
        _tell(tunnel)
    return tunnel


def _tell(tunnel: Tunnel) -> None:
    """What the caller must know about a new tunnel, printed once (a log line at INFO would
    not show in a script or a notebook)."""
    if tunnel.edge_note:  # `auto` could not use Cloudflare: the URL works on this machine only
        print(f"nbtunnel: {tunnel.edge_note}")
    if tunnel.access_help:
        print(tunnel.access_help)  # a TCP service: the user needs these commands


async def aopen_tunnel(target: Targets, *, wait: bool = True, **options: Any) -> Tunnel:
    """Async open_tunnel: the connector still runs on the runtime thread, not on your loop."""
    services, opts, settings = _prepare(target, options)
    rt = get_runtime()
    known = {id(registry[s]) for s in services if s in registry}
    coro = _astart(rt, services, _first(target), settings, opts, wait)
    tunnel = await coro if rt.on_loop_thread else await asyncio.wrap_future(rt.submit(coro))
    if id(tunnel) not in known:
        _tell(tunnel)
    return tunnel


def _first(target: Targets) -> int | str:
    return target[0] if isinstance(target, list | tuple) else target
