"""A look at the target before publishing it: does anything answer, and is it Jupyter?

Jupyter Server refuses a `Host` that is not local (403) and a WebSocket whose `Origin` does not
match its Host, so a tunnel to Jupyter needs `httpHostHeader` set to the target's own address
(the connector then rewrites a matching Origin too). Its `/api` answers `{"version": ...}`
without a token, which is how it is recognised. A refused connection is reported so the user
learns at once that requests will get 502s, instead of after the first one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from nbtunnel.connector.ingress import Ingress

if TYPE_CHECKING:  # pragma: no cover
    from nbtunnel.api.options import TunnelOptions

PROBE_TIMEOUT = 2.0


@dataclass(frozen=True)
class TargetProbe:
    """What the target answered; `checked` is False for services not probed (hello_world,
    http_status:NNN, unix sockets, TCP services)."""

    checked: bool
    reachable: bool = False
    jupyter_version: str | None = None
    error: str = ""

    @property
    def jupyter(self) -> bool:
        return self.jupyter_version is not None


async def probe(service: str, timeout: float = PROBE_TIMEOUT) -> TargetProbe:
    """GET /api on an http:// or https:// service (certificates not verified: a probe only)."""
    parts = urlsplit(service)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return TargetProbe(checked=False)
    import aiohttp  # the connector's HTTP client; imported when a tunnel opens anyway

    url = f"{parts.scheme}://{parts.netloc}/api"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
                s.get(url, ssl=False, allow_redirects=False) as resp:
            raw = await resp.content.read(4096)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
        return TargetProbe(checked=True, reachable=False, error=why)
    version = None
    if resp.status == 200:
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("version"), str) and len(doc) <= 3:
            version = doc["version"]
    return TargetProbe(checked=True, reachable=True, jupyter_version=version)


def jupyter_host(service: str) -> str:
    """The Host a Jupyter server at `service` accepts: its own address (localhost:8888)."""
    return urlsplit(service).netloc


async def plan_origin(service: str, opts: TunnelOptions) -> tuple[str | None, list[str]]:
    """(the Host header to send, one-line notes for the user): probes the target unless the
    Jupyter preset is switched off, and applies the preset to a Jupyter server."""
    notes: list[str] = []
    host_header = opts.http_host_header
    if opts.jupyter is False:
        return host_header, notes
    seen = await probe(service)
    if seen.checked and not seen.reachable:
        notes.append(f"warning: nothing answers at {service} yet ({seen.error}); requests get "
                     "a 502 until it does")
    if host_header is None and (seen.jupyter or opts.jupyter):
        host_header = jupyter_host(service)
        what = f"Jupyter Server {seen.jupyter_version}" if seen.jupyter else "Jupyter preset"
        notes.append(f"{what} at {service}: sending Host: {host_header} and a matching Origin, "
                     "as Jupyter requires. Anyone with the URL reaches its login page; its "
                     "token is the only lock" + ("" if opts.auth else " (add --auth for a "
                                                                       "second)"))
    return host_header, notes


def quick_ingress(routes: list[tuple[str, str, str | None]]) -> Ingress:
    """A quick tunnel's rules from (hostname, service, Host header): one catch-all rule for a
    single target, else one rule per hostname and a 404 for anything else."""
    if len(routes) == 1:
        _, service, host_header = routes[0]
        if host_header:
            return Ingress.from_rules([{"service": service}], {"httpHostHeader": host_header})
        return Ingress.single(service)
    rules: list[dict[str, object]] = []
    for hostname, service, host_header in routes:
        rule: dict[str, object] = {"hostname": hostname, "service": service}
        if host_header:
            rule["originRequest"] = {"httpHostHeader": host_header}
        rules.append(rule)
    return Ingress.from_rules([*rules, {"service": "http_status:404"}])
