"""Ask a quick-tunnel service for a tunnel, as `cloudflared tunnel --url` does.

`POST {service}/tunnel`, empty body, JSON content type; the answer
`{success, result: {id, name, hostname, account_tag, secret}, errors}` becomes credentials that
register like a named tunnel's. cloudflared checks neither the status nor `success` and prints
an unmarshal error for everything else; we turn the answers people meet into typed one-line
errors (rate limited, service failure, no tunnel id, TLS, unreachable). The User-Agent is
honest (`nbtunnel/<version>`) unless an operator sets another (`user_agent=`,
`$NBTUNNEL_USER_AGENT`).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass

import aiohttp
import aiohttp.abc

from nbtunnel import __version__
from nbtunnel.connector.discovery import DiscoveryError, DnsClient, DnsOptions, resolve_host
from nbtunnel.core.credentials import Credentials, CredentialsError
from nbtunnel.core.errors import NbtunnelError
from nbtunnel.transport.trust import Trust

CLOUDFLARE_QUICK_SERVICE = "https://api.trycloudflare.com"
QUICK_TIMEOUT = 15.0  # cloudflared's client timeout


class QuickTunnelError(NbtunnelError):
    """The quick-tunnel service could not be reached or gave an unusable answer."""


class QuickTunnelRateLimited(QuickTunnelError):
    """HTTP 429 / `error code: 1015`: too many quick tunnels from this address."""


class QuickTunnelServiceError(QuickTunnelError):
    """The service failed (5xx, e.g. `error code: 1101`) or answered without a tunnel."""


class QuickTunnelTLSError(QuickTunnelError):
    """The service's certificate did not verify against the trusted roots."""


class QuickTunnelUnreachable(QuickTunnelError):
    """No answer: DNS, connection refused, timeout."""


@dataclass(frozen=True)
class QuickTunnel:
    credentials: Credentials
    hostname: str
    name: str

    @property
    def url(self) -> str:
        """https://hostname (cloudflared prefixes the scheme when the answer has none)."""
        host = self.hostname
        return host if host.startswith(("https://", "http://")) else f"https://{host}"


def default_user_agent() -> str:
    return os.environ.get("NBTUNNEL_USER_AGENT") or f"nbtunnel/{__version__}"


class DnsResolver(aiohttp.abc.AbstractResolver):
    """aiohttp name resolution through our DNS options (so tests and operators can point
    api.trycloudflare.com somewhere else exactly as they point discovery)."""

    def __init__(self, options: DnsOptions) -> None:
        self._client = DnsClient(options)

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET
                      ) -> list[aiohttp.abc.ResolveResult]:
        try:
            ips = await resolve_host(self._client, host, port, QUICK_TIMEOUT)
        except DiscoveryError as exc:
            raise OSError(f"cannot resolve {host}: {exc}") from exc
        return [{"hostname": host, "host": ip, "port": port,
                 "family": socket.AF_INET6 if ":" in ip else socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST} for ip in ips]

    async def close(self) -> None:
        return None


async def request_quick_tunnel(service: str, *, timeout: float = QUICK_TIMEOUT,
                               user_agent: str | None = None, extra_cafile: str | None = None,
                               dns: DnsOptions | None = None) -> QuickTunnel:
    """POST {service}/tunnel with an empty body and parse the answer (one try, no loop)."""
    url = service.rstrip("/") + "/tunnel"
    headers = {"Content-Type": "application/json",
               "User-Agent": user_agent or default_user_agent()}
    trust = Trust.web(extra_cafile)
    dns = dns or DnsOptions.from_env()
    connector = aiohttp.TCPConnector(
        ssl=trust.ssl_context() if url.startswith("https:") else False,
        resolver=DnsResolver(dns) if dns.servers else None)
    try:
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.post(url, data=b"", headers=headers) as resp:
                body = await resp.content.read(1 << 16)
                status = resp.status
    except aiohttp.ClientConnectorCertificateError as exc:
        raise QuickTunnelTLSError(
            f"the certificate of {url} did not verify ({exc.certificate_error}); trusted: "
            f"{trust.description}") from exc
    except aiohttp.ClientSSLError as exc:
        raise QuickTunnelTLSError(f"TLS with {url} failed ({exc}); trusted: "
                                  f"{trust.description}") from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        what = str(exc) or type(exc).__name__.replace("Error", " error")
        raise QuickTunnelUnreachable(f"cannot reach the quick Tunnel service {url}: "
                                     f"{what}") from exc
    return parse_quick_answer(status, body, url)


def parse_quick_answer(status: int, body: bytes, url: str = "the quick Tunnel service"
                       ) -> QuickTunnel:
    """The answer, or the typed error a person can act on."""
    text = body[:200].decode("utf-8", "replace").strip()
    if status == 429 or "error code: 1015" in text:
        raise QuickTunnelRateLimited(
            "Cloudflare is rate-limiting quick tunnels from this address (HTTP "
            f"{status}{', error code 1015' if '1015' in text else ''}); retry later or use "
            "a named tunnel")
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        if status >= 500 or text.startswith("error code:"):
            raise QuickTunnelServiceError(
                f"the quick Tunnel service failed (HTTP {status}{': ' + text if text else ''}); "
                "retry in a minute") from None
        raise QuickTunnelError(f"{url} answered {status} with a body that is not a quick "
                               f"Tunnel: {text[:120]!r}")
    # cloudflared matches the keys case-insensitively
    doc = {str(k).lower(): v for k, v in doc.items()}
    result = doc.get("result")
    result = {str(k).lower(): v for k, v in result.items()} if isinstance(result, dict) else {}
    if not result.get("id"):
        errors = "; ".join(_error_text(e) for e in doc.get("errors") or []) or "no tunnel id"
        cls = QuickTunnelServiceError if status >= 500 or status == 200 else QuickTunnelError
        raise cls(f"the quick Tunnel service answered HTTP {status} without a tunnel "
                  f"({errors}); retry in a minute")
    try:
        creds = Credentials.from_quick_result(result)
    except CredentialsError as exc:
        raise QuickTunnelServiceError(f"the quick Tunnel service answered an unusable tunnel: "
                                      f"{exc}") from exc
    return QuickTunnel(creds, str(result.get("hostname", "")), str(result.get("name", "")))


def _error_text(error: object) -> str:
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        return f"{code}: {message}" if code is not None else str(message)
    return str(error)
