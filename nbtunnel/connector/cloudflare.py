"""Cloudflare's edge as one profile: discovery, trust, the quick API and the HA count.

What `cloudflared tunnel --url` does before its supervisor starts, in one place so the CLI,
`open_tunnel` and `%tunnel` share it: find the two regions (discovery.py), trust Cloudflare's
origin roots (or only `--cacert`), ask api.trycloudflare.com for a quick tunnel, and then use
ONE connection over QUIC (cloudflared 2023.3.2 onward). Named tunnels (token or credentials
file) skip the API and keep four connections spread over both regions.

`auto` (the default when no edge is configured) runs the same steps under a short budget so a
machine without internet falls back to the embedded local edge within seconds.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from nbtunnel.connector.discovery import (
    DISCOVERY_TIMEOUT,
    Discovery,
    DnsOptions,
    discover,
)
from nbtunnel.connector.edgepool import EdgePool
from nbtunnel.connector.quick import (
    CLOUDFLARE_QUICK_SERVICE,
    QUICK_TIMEOUT,
    QuickTunnel,
    request_quick_tunnel,
)
from nbtunnel.core.errors import NbtunnelError
from nbtunnel.transport.trust import Trust

AUTO_BUDGET = 4.0  # seconds for discovery + quick API before `auto` starts a local edge
QUICK_HA_CONNECTIONS = 1  # cloudflared: "QuickTunnels only make a single connection"
PUBLIC_NOTICE = ("this URL is public: anyone who has it can reach your service "
                 "(it may take some time to be reachable)")
LOCAL_NOTICE = "this URL is local: it works on this machine only"


class CloudflareUnavailable(NbtunnelError):
    """Cloudflare's edge or quick-tunnel service could not be used (the cause is chained)."""


@dataclass(frozen=True)
class CloudflareOptions:
    """What a user or operator may change about reaching Cloudflare."""

    region: str | None = None  # --region (us, fed...): regional SRV name
    ip_version: str = "auto"  # --edge-ip-version 4|6|auto
    cacert: str | None = None  # replaces the edge roots (as cloudflared); extra CA for API/DoT
    quick_service: str = CLOUDFLARE_QUICK_SERVICE
    dns: DnsOptions = field(default_factory=DnsOptions.from_env)
    user_agent: str | None = None  # quick API User-Agent (default nbtunnel/<version>)

    @property
    def trust(self) -> Trust:
        return Trust.cloudflare_edge(self.cacert)

    def with_dns_cafile(self) -> DnsOptions:
        """DoT trusts the system store, plus --cacert when given (tests, private resolvers)."""
        if self.cacert and self.dns.dot_cafile is None:
            return DnsOptions(self.dns.servers, self.dns.dot, self.dns.dot_server_name,
                              self.cacert)
        return self.dns


@dataclass
class CloudflareEdge:
    """A discovered edge: its regions, the address pool and the roots it is verified with."""

    discovery: Discovery
    pool: EdgePool
    trust: Trust

    def describe(self) -> str:
        regions = " and ".join(f"{t} ({len(r)} addresses)" for t, r in
                               zip(self.discovery.targets, self.discovery.regions, strict=True))
        return f"Cloudflare's edge: {regions} via {self.discovery.via}"


async def find_edge(options: CloudflareOptions,
                    timeout: float = DISCOVERY_TIMEOUT) -> CloudflareEdge:
    found = await discover(options.region, options=options.with_dns_cafile(), timeout=timeout,
                           ip_version=options.ip_version)
    return CloudflareEdge(found, EdgePool(found.regions, options.ip_version), options.trust)


async def open_quick(options: CloudflareOptions, *, budget: float | None = None
                     ) -> tuple[CloudflareEdge, QuickTunnel]:
    """Discovery, then the quick API. With a budget (auto), both share it; without, each step
    has cloudflared's own timeouts. Raises CloudflareUnavailable naming the failed step."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget if budget is not None else None
    try:
        edge = await find_edge(options, DISCOVERY_TIMEOUT if budget is None else budget * 0.6)
    except NbtunnelError as exc:
        raise CloudflareUnavailable(str(exc)) from exc
    left = QUICK_TIMEOUT if deadline is None else max(deadline - loop.time(), 0.5)
    try:
        quick = await request_quick_tunnel(
            options.quick_service, timeout=left, user_agent=options.user_agent,
            extra_cafile=options.cacert, dns=options.dns)
    except NbtunnelError as exc:
        raise CloudflareUnavailable(str(exc)) from exc
    return edge, quick


def is_cloudflare_service(url: str) -> bool:
    """Whether a quick-service URL is Cloudflare's (public https URLs, no port)."""
    return url.rstrip("/").startswith(CLOUDFLARE_QUICK_SERVICE)


def fallback_line(exc: BaseException, instead: str = "started a local edge: its URL works on "
                  "this machine only") -> str:
    """The one line `auto` prints when it uses another edge (`instead` says which)."""
    reason = str(exc) or type(exc).__name__
    return (f"Cloudflare's edge is not reachable: {reason}; {instead} (use --edge cloudflare "
            "to insist, --edge local to skip this check)")


def quick_box(url: str, headline: str = "Your quick Tunnel has been created! Visit it at "
              "(it may take some time to be reachable):") -> str:
    """The box cloudflared prints for a new quick tunnel (a local edge's is reachable at once:
    its headline says so by leaving the delay out)."""
    lines = [headline, url]
    width = max(len(line) for line in lines) + 4
    border = "+" + "-" * width + "+"
    return "\n".join([border, *(f"|  {line.ljust(width - 2)}|" for line in lines), border])
