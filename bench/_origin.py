"""The benchmark's origin: a small aiohttp app run as its own process by tunnel_bench.py.

    python bench/_origin.py [--host 127.0.0.1] [--port 0]

Prints ``PORT <n>`` on stdout once listening. Routes:

- ``GET /``           12-byte ``hello world`` (the small-request benchmark)
- ``GET /bytes/N``    N bytes streamed in 256 KiB writes, with Content-Length
- ``POST /sink``      reads the whole request body, answers ``{"bytes": count}``
- ``GET /hold``       chunked response kept open until the client goes away; a 1-byte chunk is
                      written every ``?beat=S`` seconds (default 1; 0 = never write after the
                      first chunk)
- ``GET /stats``      gauges: open ``/hold`` and ``/bytes`` responses, totals, bytes sunk

The gauges let the benchmark see from the origin's side when the tunnel has really let go of
a request after its client disappeared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys

from aiohttp import web

CHUNK = 256 * 1024
_BLOCK = b"x" * CHUNK
HELLO = b"hello world\n"

STATS = {"holds": 0, "holds_total": 0, "bytes_open": 0, "bytes_total": 0, "sunk": 0}


async def hello(_: web.Request) -> web.Response:
    return web.Response(body=HELLO, content_type="text/plain")


async def send_bytes(request: web.Request) -> web.StreamResponse:
    n = int(request.match_info["n"])
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    resp.content_length = n
    STATS["bytes_open"] += 1
    STATS["bytes_total"] += 1
    try:
        await resp.prepare(request)
        block = memoryview(_BLOCK)
        left = n
        while left > 0:
            k = min(left, CHUNK)
            await resp.write(block[:k])
            left -= k
        await resp.write_eof()
    finally:
        STATS["bytes_open"] -= 1
    return resp


async def sink(request: web.Request) -> web.Response:
    count = 0
    async for chunk in request.content.iter_any():
        count += len(chunk)
    STATS["sunk"] += count
    return web.Response(text=json.dumps({"bytes": count}), content_type="application/json")


async def hold(request: web.Request) -> web.StreamResponse:
    beat = float(request.query.get("beat", "1"))
    resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
    resp.enable_chunked_encoding()
    STATS["holds"] += 1
    STATS["holds_total"] += 1
    try:
        await resp.prepare(request)
        await resp.write(b"held\n")
        while True:
            if beat > 0:
                await asyncio.sleep(beat)
                await resp.write(b".")
            else:
                await asyncio.sleep(3600)
    except (ConnectionError, asyncio.CancelledError):
        pass  # the client (the connector, or a direct client) went away
    finally:
        STATS["holds"] -= 1
    return resp


async def stats(_: web.Request) -> web.Response:
    return web.Response(text=json.dumps(STATS), content_type="application/json")


def make_app() -> web.Application:
    app = web.Application(client_max_size=1 << 40)
    app.router.add_get("/", hello)
    app.router.add_get("/bytes/{n:\\d+}", send_bytes)
    app.router.add_post("/sink", sink)
    app.router.add_get("/hold", hold)
    app.router.add_get("/stats", stats)
    return app


async def serve(host: str, port: int) -> None:
    # handler_cancellation: a client that disconnects cancels its handler (how /hold ends
    # when nothing is being written)
    runner = web.AppRunner(make_app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))
    sys.exit(0)


if __name__ == "__main__":
    main()
