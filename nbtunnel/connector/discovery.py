"""Finding Cloudflare's edge as cloudflared does: DNS SRV, then A/AAAA for each region.

`_v2-origintunneld._tcp.argotunnel.com` (`_<region>-v2-origintunneld...` with a region) names at
least two targets, one per region (region1/region2.v2.argotunnel.com), each with port 7844 used
for QUIC (UDP) and HTTP/2 (TCP). When the system resolver fails, cloudflared asks again over DNS
over TLS at 1.1.1.1:853 (SNI cloudflare-dns.com); so do we, and the targets are then resolved
over the same path. DNS messages are dnspython's; this module only chooses whom to ask.

Operators and tests point the lookups elsewhere with `DnsOptions` (or `NBTUNNEL_DNS=HOST:PORT`
for plain DNS and `NBTUNNEL_DOT=HOST:PORT` or `off` for the fallback); nothing else changes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver

from nbtunnel.core.errors import NbtunnelError
from nbtunnel.transport.trust import Trust

log = logging.getLogger("nbtunnel.connector.discovery")

SRV_SERVICE = "v2-origintunneld"
SRV_DOMAIN = "argotunnel.com"
DOT_ADDRESS = ("1.1.1.1", 853)
DOT_SERVER_NAME = "cloudflare-dns.com"
DISCOVERY_TIMEOUT = 15.0  # cloudflared's DoT timeout; the system resolver has its own
MIN_REGIONS = 2


class DiscoveryError(NbtunnelError):
    """Cloudflare's edge could not be found in DNS (the message says which lookups failed)."""


def srv_name(region: str | None = None) -> str:
    """`_v2-origintunneld._tcp.argotunnel.com`, or the regional form for e.g. `us`/`fed`."""
    service = f"{region}-{SRV_SERVICE}" if region else SRV_SERVICE
    return f"_{service}._tcp.{SRV_DOMAIN}"


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep or "]" in port or (host.count(":") and not host.startswith("[")):
        host, port = text.strip(), str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise DiscoveryError(f"expected HOST:PORT for a DNS server, got {text!r}")
    return host, int(port)


@dataclass(frozen=True)
class DnsOptions:
    """Whom to ask: the system resolver (or `servers`), then DNS over TLS at `dot`."""

    servers: tuple[tuple[str, int], ...] = ()
    dot: tuple[str, int] | None = DOT_ADDRESS
    dot_server_name: str = DOT_SERVER_NAME
    dot_cafile: str | None = None  # an extra CA for the DoT server (tests, private resolvers)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None,
                 dot_cafile: str | None = None) -> DnsOptions:
        env = os.environ if env is None else env
        servers = tuple(_host_port(s, 53) for s in env.get("NBTUNNEL_DNS", "").split(",")
                        if s.strip())
        dot_text = env.get("NBTUNNEL_DOT", "").strip()
        dot: tuple[str, int] | None = DOT_ADDRESS
        if dot_text.lower() == "off":
            dot = None
        elif dot_text:
            dot = _host_port(dot_text, 853)
        return cls(servers, dot, env.get("NBTUNNEL_DOT_NAME", DOT_SERVER_NAME), dot_cafile)

    @property
    def primary_label(self) -> str:
        if not self.servers:
            return "the system resolver"
        return ", ".join(f"{h}:{p}" for h, p in self.servers)


@dataclass(frozen=True, order=True)
class EdgeAddr:
    """One edge IP; the same port serves QUIC (UDP) and HTTP/2 (TCP)."""

    ip: str
    port: int

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.ip).version

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if self.version == 6 else f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class Discovery:
    """The regions found (each a list of addresses, preferred family first)."""

    regions: tuple[tuple[EdgeAddr, ...], ...]
    srv_name: str
    targets: tuple[str, ...]
    via: str  # which resolver answered, for logs
    errors: tuple[str, ...] = field(default=())  # lookups that failed before one answered


class DnsClient:
    """Queries over one path: "primary" (system or `servers`) or "dot" (DNS over TLS)."""

    def __init__(self, options: DnsOptions) -> None:
        self.options = options

    def label(self, via: str) -> str:
        if via == "dot" and self.options.dot is not None:
            host, port = self.options.dot
            return f"DNS over TLS {host}:{port}"
        return self.options.primary_label

    async def query(self, name: str, rdtype: dns.rdatatype.RdataType, via: str,
                    timeout: float) -> list[object]:
        """The answer's records of rdtype (empty when the name has none); raises
        DiscoveryError for NXDOMAIN, SERVFAIL, timeouts and unreachable servers."""
        if via == "primary" and not self.options.servers:
            return await self._system(name, rdtype, timeout)
        query = dns.message.make_query(name, rdtype)
        try:
            async with asyncio.timeout(timeout):
                response = await self._ask(query, via, timeout)
        except (TimeoutError, dns.exception.Timeout) as exc:
            raise DiscoveryError(f"{self.label(via)}: timed out") from exc
        except (OSError, dns.exception.DNSException, ValueError) as exc:
            raise DiscoveryError(f"{self.label(via)}: {exc or type(exc).__name__}") from exc
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            raise DiscoveryError(f"{self.label(via)}: {dns.rcode.to_text(rcode)} for {name}")
        return [rd for rrset in response.answer if rrset.rdtype == rdtype for rd in rrset]

    async def _ask(self, query: dns.message.Message, via: str,
                   timeout: float) -> dns.message.Message:
        if via == "dot":
            assert self.options.dot is not None
            host, port = self.options.dot
            ctx = Trust.web(self.options.dot_cafile).ssl_context()
            return await dns.asyncquery.tls(query, host, timeout=timeout, port=port,
                                            ssl_context=ctx,
                                            server_hostname=self.options.dot_server_name)
        last: Exception | None = None
        for host, port in self.options.servers:
            try:
                response, _ = await dns.asyncquery.udp_with_fallback(
                    query, host, timeout=timeout, port=port)
                return response
            except (OSError, dns.exception.DNSException) as exc:
                last = exc
        assert last is not None
        raise last

    async def _system(self, name: str, rdtype: dns.rdatatype.RdataType,
                      timeout: float) -> list[object]:
        try:
            resolver = dns.asyncresolver.Resolver()
            answer = await resolver.resolve(name, rdtype, lifetime=timeout,
                                            raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            raise DiscoveryError(f"the system resolver: no such name {name}") from exc
        except dns.resolver.LifetimeTimeout as exc:
            raise DiscoveryError("the system resolver: timed out") from exc
        except (dns.exception.DNSException, OSError) as exc:
            raise DiscoveryError(f"the system resolver: {exc or type(exc).__name__}") from exc
        return list(answer.rrset) if answer.rrset is not None else []


def _order_srv(records: Sequence[object]) -> list[tuple[str, int]]:
    """Priority order, randomised by weight within a priority (as Go's LookupSRV)."""
    keyed = []
    for rd in records:
        weight = max(int(getattr(rd, "weight", 0)), 1)
        keyed.append((int(getattr(rd, "priority", 0)), -random.random() ** (1 / weight),
                      str(getattr(rd, "target", "")).rstrip("."), int(getattr(rd, "port", 0))))
    return [(target, port) for _, _, target, port in sorted(keyed)]


def prefer_ipv6() -> bool:
    """Whether this host has a route to Cloudflare over IPv6 (getaddrinfo's own rule)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.connect(("2606:4700::6810:84e5", 7844))  # UDP: no packet is sent
            return not ipaddress.ip_address(sock.getsockname()[0]).is_loopback
    except OSError:
        return False


def _ordered(ips: Sequence[str], port: int, v6_first: bool) -> tuple[EdgeAddr, ...]:
    addrs = {EdgeAddr(ip, port): None for ip in ips}  # dedup, keep order
    return tuple(sorted(addrs, key=lambda a: (a.version == 4) == v6_first))


async def resolve_host(client: DnsClient, target: str, port: int, timeout: float,
                       via: str = "primary") -> list[str]:
    """IP addresses of target (A then AAAA) over one path; an IP literal is itself."""
    try:
        return [str(ipaddress.ip_address(target.strip("[]")))]
    except ValueError:
        pass
    if via == "primary" and not client.options.servers:  # like net.LookupIP: /etc/hosts too
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(target, port, type=socket.SOCK_DGRAM)
        except (OSError, TimeoutError) as exc:
            raise DiscoveryError(f"cannot resolve {target}: {exc or 'timed out'}") from exc
        return [str(info[4][0]) for info in infos]
    ips: list[str] = []
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        ips += [str(getattr(rd, "address", "")) for rd in
                await client.query(target, rdtype, via, timeout)]
    return ips


async def discover(region: str | None = None, *, options: DnsOptions | None = None,
                   timeout: float = DISCOVERY_TIMEOUT, ip_version: str = "auto") -> Discovery:
    """SRV then A/AAAA per target, falling back to DNS over TLS; at least two regions."""
    options = options or DnsOptions.from_env()
    client = DnsClient(options)
    name = srv_name(region)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    paths = ["primary"] + (["dot"] if options.dot is not None else [])
    errors: list[str] = []
    for i, via in enumerate(paths):
        left = deadline - loop.time()
        # the first path keeps part of the budget for the fallback
        budget = left * 0.5 if i + 1 < len(paths) else left
        if budget <= 0.05:
            errors.append(f"{client.label(via)}: no time left")
            continue
        try:
            async with asyncio.timeout(budget):
                found = await _discover_via(client, via, name, ip_version, budget)
        except TimeoutError:
            errors.append(f"{client.label(via)}: timed out")
            continue
        except DiscoveryError as exc:
            errors.append(str(exc))
            if "Cloudflare regions" in str(exc):
                break  # an answer, just not a usable one: asking elsewhere will not help
            continue
        if errors:
            log.info("edge discovery: %s failed (%s); %s answered", client.label("primary"),
                     "; ".join(errors), client.label(via))
        return Discovery(found[0], name, found[1], client.label(via), tuple(errors))
    raise DiscoveryError(f"DNS lookup of {name} failed: {'; '.join(errors)}")


async def _discover_via(client: DnsClient, via: str, name: str, ip_version: str,
                        timeout: float) -> tuple[tuple[tuple[EdgeAddr, ...], ...], tuple[str, ...]]:
    records = await client.query(name, dns.rdatatype.SRV, via, timeout)
    targets = _order_srv(records)
    if len(targets) < MIN_REGIONS:
        raise DiscoveryError(f"expected at least {MIN_REGIONS} Cloudflare regions, but SRV "
                             f"{name} returned {len(targets)}")
    v6_first = ip_version == "6" or (ip_version == "auto" and prefer_ipv6())
    regions = []
    for target, port in targets[:MIN_REGIONS]:
        ips = await resolve_host(client, target, port, timeout, via)
        if ip_version in ("4", "6"):
            ips = [ip for ip in ips if ipaddress.ip_address(ip).version == int(ip_version)]
        if not ips:
            raise DiscoveryError(f"SRV target {target} has no IPv{ip_version} addresses"
                                 if ip_version != "auto" else
                                 f"SRV target {target} has no addresses")
        regions.append(_ordered(ips, port, v6_first))
    return tuple(regions), tuple(t for t, _ in targets[:MIN_REGIONS])
