"""JupyterHub / Binder: reach the embedded edge from the browser via jupyter-server-proxy.

On a hub the kernel's 127.0.0.1 is not the user's machine, but jupyter-server-proxy forwards
`{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/...` to `127.0.0.1:{port}/...`. The edge routes by Host
header, and through the proxy the Host is the hub's, so pointing the proxy at the edge's front
would only ever answer 404. Instead each tunnel gets a tiny local forwarder on its own port that
pins `Host: <tunnel hostname>` and relays to the front; the proxy URL points at that port.
Limits: plain HTTP only (no WebSocket upgrade), and absolute links in the origin's pages
(`/static/...`) escape the proxy prefix, as with any jupyter-server-proxy app.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import aiohttp
from aiohttp import web

from nbtunnel.api.tunnel import Tunnel
from nbtunnel.core import http1 as core_http1

log = logging.getLogger("nbtunnel.notebook")

HOP_BY_HOP = core_http1.HOP_BY_HOP | {"proxy-authenticate", "proxy-authorization", "host",
                                      "content-length"}


def hub_prefix() -> str | None:
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
    if not prefix:
        return None
    return prefix if prefix.endswith("/") else prefix + "/"


async def start_forwarder(front: tuple[str, int], hostname: str) -> tuple[int, Any]:
    """Serve 127.0.0.1:<free port>, relaying to front with Host pinned; returns (port, close)."""
    session = aiohttp.ClientSession(auto_decompress=False,
                                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
    base = f"http://{front[0]}:{front[1]}"

    async def relay(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = hostname
        body = request.content if request.body_exists else None
        async with session.request(request.method, base + str(request.rel_url), headers=headers,
                                   data=body, allow_redirects=False) as upstream:
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    resp.headers.add(k, v)
            await resp.prepare(request)
            async for chunk in upstream.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/{tail:.*}", relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def close() -> None:
        await runner.cleanup()
        await session.close()

    return port, close


def attach_hosted_url(tunnel: Tunnel) -> str | None:
    """On a hub, start the forwarder and record the proxy URL in tunnel.extra_urls."""
    prefix = hub_prefix()
    if prefix is None or "JupyterHub proxy" in tunnel.extra_urls:
        return None
    rt = tunnel._runtime
    try:
        port, close = rt.call(start_forwarder(tunnel.front, tunnel.hostname), timeout=10)
    except OSError as exc:
        log.warning("no jupyter-server-proxy URL for %s: %s", tunnel.url, exc)
        return None
    tunnel.add_cleanup(close)
    url = f"{prefix}proxy/{port}/"
    tunnel.extra_urls["JupyterHub proxy"] = url
    print(f"nbtunnel: from your browser on this hub: {url}")
    return url
