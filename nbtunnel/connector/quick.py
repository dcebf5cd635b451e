"""Ask an edge's quick-tunnel service for a tunnel, as `cloudflared tunnel --url` does."""

from __future__ import annotations

import json
from dataclasses import dataclass

import aiohttp

from nbtunnel import __version__
from nbtunnel.connector.credentials import Credentials, CredentialsError
from nbtunnel.core.errors import NbtunnelError


class QuickTunnelError(NbtunnelError):
    """The quick-tunnel service could not be reached or gave an unusable answer."""


@dataclass(frozen=True)
class QuickTunnel:
    credentials: Credentials
    hostname: str
    name: str


async def request_quick_tunnel(service: str, *, timeout: float = 15.0) -> QuickTunnel:
    """POST {service}/tunnel with an empty body; parse trycloudflare's answer."""
    url = service.rstrip("/") + "/tunnel"
    headers = {"Content-Type": "application/json", "User-Agent": f"nbtunnel/{__version__}"}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.post(url, data=b"", headers=headers) as resp:
                body = await resp.read()
                status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise QuickTunnelError(f"failed to request quick Tunnel from {url}: {exc}") from exc
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise QuickTunnelError(f"quick Tunnel service answered {status} with non-JSON "
                               f"body: {body[:200]!r}") from exc
    # cloudflared matches the top-level keys case-insensitively
    doc = {str(k).lower(): v for k, v in doc.items()} if isinstance(doc, dict) else {}
    result = doc.get("result")
    if not isinstance(result, dict):
        errors = doc.get("errors") or f"HTTP {status}"
        raise QuickTunnelError(f"quick Tunnel service refused: {errors}")
    try:
        creds = Credentials.from_quick_result(result)
    except CredentialsError as exc:
        raise QuickTunnelError(str(exc)) from exc
    return QuickTunnel(creds, str(result.get("hostname", "")), str(result.get("name", "")))
