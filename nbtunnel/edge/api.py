"""The edge's HTTP API, served by the public front on the API hostnames.

For now it is the quick-tunnel service: `POST /tunnel` answers exactly as trycloudflare does
(`{"success":true,"result":{"id","name","hostname","account_tag","secret"},"errors":[]}`), so
both `cloudflared tunnel --quick-service URL` and our connector can use it. A later issue adds
the authenticated control-plane API beside it: everything under `/api/v1` goes to
`ControlApi` (rest_api.py).

Quick tunnels need no account, so `POST /tunnel` is rate-limited per client address (token
bucket, `EdgeConfig.quick_tunnels_per_minute` / `quick_tunnel_burst`); beyond it the answer is
trycloudflare's: `429` with `error code: 1015`, plus a line saying when to retry.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from typing import TYPE_CHECKING

from nbtunnel import __version__
from nbtunnel.edge.clock import Clock
from nbtunnel.edge.ratelimit import RateLimiter, Verdict, retry_after
from nbtunnel.edge.rest_api import PREFIX, ControlApi
from nbtunnel.edge.stores.base import ControlStore, HostnameTaken, StoreError
from nbtunnel.edge.words import random_hostname

if TYPE_CHECKING:
    from nbtunnel.edge.front import Headers, Request

log = logging.getLogger("nbtunnel.edge.api")

JSON = [(b"Content-Type", b"application/json")]
QUICK_ATTEMPTS = 20


def _json(status: int, doc: object) -> tuple[int, Headers, bytes]:
    return status, JSON, json.dumps(doc).encode()


class EdgeApi:
    """Dispatches API requests; each handler returns (status, headers, body)."""

    def __init__(self, store: ControlStore, *, domain: str, ca_pem: bytes,
                 control: ControlApi | None = None, quick_limiter: RateLimiter | None = None,
                 clock: Clock | None = None) -> None:
        self.store = store
        self.domain = domain
        self.ca_pem = ca_pem
        self.edge_id = ""  # set by the Edge (several edges: which one answered)
        self.location = ""
        self.control = control
        self.quick_limiter = quick_limiter or RateLimiter(0, 1)
        self.clock = clock or Clock()

    async def __call__(self, req: Request, body: bytes) -> tuple[int, Headers, bytes]:
        path = req.target.split("?", 1)[0]
        if self.control is not None and (path == PREFIX or path.startswith(PREFIX + "/")):
            return await self.control(req, body)
        if path == "/tunnel":
            if req.method != "POST":
                return _json(405, {"success": False, "errors": [
                    {"code": 405, "message": "use POST /tunnel"}]})
            verdict = self.quick_limiter.take(req.client_ip, self.clock.monotonic())
            if not verdict.allowed:
                return self._rate_limited(req.client_ip, verdict)
            return await self.create_quick_tunnel()
        if path == "/ca.pem" and req.method in ("GET", "HEAD"):
            return 200, [(b"Content-Type", b"application/x-pem-file")], self.ca_pem
        if path == "/" and req.method in ("GET", "HEAD"):
            return _json(200, {
                "service": "nbtunnel edge",
                "edge": {"id": self.edge_id, "location": self.location},
                "version": __version__,
                "domain": self.domain,
                "endpoints": {"POST /tunnel": "create a quick tunnel",
                              "GET /ca.pem": "the edge CA for --cacert",
                              "/api/v1": "control plane (GET /api/v1/openapi.json)"},
            })
        return _json(404, {"success": False, "errors": [
            {"code": 404, "message": f"no API endpoint {req.method} {path}"}]})

    def _rate_limited(self, client: str, verdict: Verdict) -> tuple[int, Headers, bytes]:
        limiter = self.quick_limiter
        if verdict.first:
            log.warning("rate-limiting quick tunnel creation for %s (%g per minute, bursts "
                        "of %d)", limiter.client_key(client), limiter.rate * 60, limiter.burst)
        wait = retry_after(verdict.retry_in)
        body = (f"error code: 1015\nYou are being rate limited: at most "
                f"{limiter.rate * 60:g} quick tunnels per minute (bursts of {limiter.burst}) "
                f"per client address. Retry in {wait} s.\n")
        return 429, [(b"Content-Type", b"text/plain; charset=utf-8"),
                     (b"Retry-After", str(wait).encode())], body.encode()

    async def _reserve(self, hostname: str) -> bool:
        """Several edges: a hostname another edge is handing out right now is skipped (Redis);
        the store's unique route still decides if presence is unavailable."""
        if self.control is None:
            return True
        try:
            return await self.control.presence.reserve_hostname(hostname)
        except Exception as exc:
            log.debug("no hostname reservation for %s: %s", hostname, exc)
            return True

    async def create_quick_tunnel(self) -> tuple[int, Headers, bytes]:
        """A fresh random hostname; the store refuses one that is taken (by any edge of the
        deployment), and we draw again."""
        for _ in range(QUICK_ATTEMPTS):
            hostname = random_hostname(self.domain)
            if self.store.hostname_taken(hostname) or not await self._reserve(hostname):
                continue
            try:
                tunnel = await self.store.create_quick_tunnel(
                    hostname, account_tag=secrets.token_hex(16))
            except HostnameTaken:
                continue
            except StoreError as exc:
                log.warning("quick tunnel not created: %s", exc)
                return _json(503, {"success": False, "errors": [
                    {"code": 503, "message": "the tunnel store is unavailable; retry later"}]})
            break
        else:
            return _json(503, {"success": False, "errors": [
                {"code": 503, "message": "no free hostname found; retry"}]})
        name = hostname.split(".", 1)[0]
        log.info("quick tunnel %s created: %s", tunnel.id, hostname)
        return _json(200, {
            "success": True,
            "result": {
                "id": str(tunnel.id),
                "name": name,
                "hostname": hostname,
                "account_tag": tunnel.account_tag,
                "secret": base64.b64encode(tunnel.secret).decode(),
            },
            "errors": [],
        })
