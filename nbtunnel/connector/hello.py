"""The built-in `hello_world` origin: a tiny server to prove a tunnel works end to end.

Like cloudflared's, it has a page that shows what the origin received (so one can see the
headers the edge and the connector added), `/uptime`, `/_health`, an `/sse` ticker (checks
that streaming is not buffered) and a `/ws` echo (checks upgrades). It serves plain HTTP on
127.0.0.1; the connector reaches it through the ordinary origin client.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import time
import weakref
from datetime import UTC, datetime

from aiohttp import WSCloseCode, WSMsgType, web

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
          "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_SHOWN = ("Cf-Connecting-IP", "X-Forwarded-For", "Cf-Ray")
_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>nbtunnel hello world</title></head>
<body style="font-family: sans-serif; max-width: 50em; margin: 2em auto">
<h1>nbtunnel hello world</h1>
<p>Congrats! Your tunnel works: this page was served by the built-in hello world origin.</p>
<p><b>{method}</b> <code>{path}</code></p>
{shown}
<h2>Request headers received</h2>
<table>{rows}</table>
<h2>Other endpoints</h2>
<ul><li><a href="/uptime">/uptime</a></li><li><a href="/_health">/_health</a></li>
<li><a href="/sse?freq=1s">/sse?freq=1s</a> (server-sent events)</li>
<li><code>/ws</code> (WebSocket echo)</li></ul>
</body></html>
"""


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string such as "1s", "500ms" or "1m30s"."""
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(f"invalid duration {text!r}")
    return total


def format_go_duration(seconds: float) -> str:
    """Go's time.Duration.String(), e.g. "1h2m3.5s" or "250ms"."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        for unit, scale in (("ms", 1e3), ("µs", 1e6), ("ns", 1e9)):
            if seconds * scale >= 1 or unit == "ns":
                return f"{seconds * scale:.6f}".rstrip("0").rstrip(".") + unit
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = f"{secs:.9f}".rstrip("0").rstrip(".") + "s"
    if hours or minutes:
        out = f"{int(minutes)}m{out}"
    if hours:
        out = f"{int(hours)}h{out}"
    return out


class HelloWorldServer:
    """Run with `start()`, reach at `url`, and `stop()` closes every connection it holds."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self._url = ""
        self._started_at = 0.0
        self._started_wall = datetime.now(UTC)
        self._stopping = asyncio.Event()
        self._sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()

    @property
    def url(self) -> str:
        if not self._url:
            raise RuntimeError("HelloWorldServer is not started")
        return self._url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if self._runner is not None:
            raise RuntimeError("HelloWorldServer is already started")
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/uptime", self._uptime)
        app.router.add_get("/_health", self._health)
        app.router.add_get("/sse", self._sse)
        app.router.add_get("/ws", self._ws)
        app.on_shutdown.append(self._on_shutdown)
        # Long-lived handlers end on their own at shutdown; the timeout is only a backstop.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._stopping.clear()
        self._started_at, self._started_wall = time.monotonic(), datetime.now(UTC)
        bound = runner.addresses[0]
        self._url = f"http://{host}:{bound[1]}"

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self._url = ""

    async def _on_shutdown(self, app: web.Application) -> None:
        self._stopping.set()
        for ws in list(self._sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    async def _index(self, request: web.Request) -> web.Response:
        shown = "".join(
            f"<p>{html.escape(name)}: <code>{html.escape(request.headers[name])}</code></p>"
            for name in _SHOWN if name in request.headers
        )
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td><code>{html.escape(v)}</code></td></tr>"
            for k, v in request.headers.items()
        )
        page = _PAGE.format(method=html.escape(request.method),
                            path=html.escape(request.path_qs), shown=shown, rows=rows)
        return web.Response(text=page, content_type="text/html")

    async def _uptime(self, request: web.Request) -> web.Response:
        start = self._started_wall.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        uptime = format_go_duration(time.monotonic() - self._started_at)
        return web.json_response({"startTime": start, "uptime": uptime})

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        try:
            period = parse_go_duration(request.query.get("freq", "1s"))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc
        if period <= 0:
            raise web.HTTPBadRequest(text="freq must be positive")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        seq = 0
        with contextlib.suppress(ConnectionError):
            while not self._stopping.is_set():
                now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                await resp.write(f"id: {seq}\ndata: {now}\n\n".encode())  # sent unbuffered
                seq += 1
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(period):
                        await self._stopping.wait()
            await resp.write_eof()
        return resp

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(timeout=2.0)  # bounds stop() for a silent client
        await ws.prepare(request)
        self._sockets.add(ws)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws
