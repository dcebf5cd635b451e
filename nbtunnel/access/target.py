"""Where an access client connects: the hostname, the edge address, and how TLS is checked.

`cloudflared access` always opens `wss://<hostname>`: TLS with SNI and Host = the hostname,
verified against the system roots. For a self-hosted edge the same hostname usually does not
resolve, and its certificate comes from a private CA, so `--edge-address HOST:PORT` dials
another address while keeping SNI/Host, `--edge-ca FILE` trusts that CA and `--insecure`
skips verification. `http://host:port` (or `ws://`) selects plain WebSocket, for an edge's
plain HTTP front.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from nbtunnel.core.errors import NbtunnelError


class AccessError(NbtunnelError):
    """The access client could not open the carried connection; the text says why and what to
    try next."""


def parse_host_port(text: str, default_port: int, *, any_port: bool = False
                    ) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]:port` -> (host, port); `any_port` allows port 0 (listen on
    any free port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    lowest = 0 if any_port else 1
    if not host or (port and (not port.isdigit() or not lowest <= int(port) < 65536)):
        raise AccessError(f"expected HOST[:PORT], got {text!r}")
    return host, int(port) if port else default_port


@dataclass(frozen=True)
class AccessTarget:
    """A parsed `--hostname` plus the options that say how to reach and trust it."""

    host: str
    port: int
    tls: bool = True
    edge_address: tuple[str, int] | None = None
    edge_ca: str | None = None
    insecure: bool = False
    destination: str | None = None  # bastion: Cf-Access-Jump-Destination
    headers: tuple[tuple[str, str], ...] = field(default=())
    connect_timeout: float = 30.0

    @classmethod
    def parse(cls, hostname: str, *, edge_address: str | None = None,
              edge_ca: str | None = None, insecure: bool = False,
              destination: str | None = None, headers: tuple[tuple[str, str], ...] = (),
              connect_timeout: float = 30.0) -> AccessTarget:
        text = hostname.strip()
        tls = True
        if "://" in text:
            parts = urlsplit(text)
            scheme = parts.scheme.lower()
            if scheme not in ("https", "wss", "http", "ws"):
                raise AccessError(f"--hostname {hostname!r}: use a hostname or an https:// URL")
            tls = scheme in ("https", "wss")
            text = parts.netloc
        host, port = parse_host_port(text, 443 if tls else 80)
        edge = parse_host_port(edge_address, port) if edge_address else None
        return cls(host, port, tls, edge, edge_ca, insecure, destination, headers,
                   connect_timeout)

    @property
    def dial(self) -> tuple[str, int]:
        return self.edge_address or (self.host, self.port)

    @property
    def host_header(self) -> str:
        default = 443 if self.tls else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.host_header}"

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        try:
            ctx = ssl.create_default_context(cafile=self.edge_ca)
        except (OSError, ssl.SSLError) as exc:
            raise AccessError(f"cannot load the edge CA {self.edge_ca}: {exc}") from exc
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])  # WebSocket upgrades are HTTP/1.1
        return ctx
