#!/usr/bin/env python3
"""CPU per request of the HTTP/2 tunnel transport alone, edge and connector in one process.

    .venv/bin/python bench/h2_transport_bench.py [-n 20000] [-c 50] [--profile]

The edge role and the connector role of ``transport/http2`` talk through an in-memory pipe
(no TLS, no sockets, no origin): N small requests (a browser-like GET head, a 12-byte
response with two origin headers), C at a time. Prints the process CPU time per request for
the whole exchange (both roles: head mapping, HTTP/2 framing, HPACK, flow control, the
asyncio tasks of the workers). A shared machine hardly moves this figure, unlike req/s
through the whole tunnel, so it is the one to compare before/after a transport change.
``--profile`` prints cProfile's top functions by own time and the Python calls per request.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nbtunnel.core.httpmeta import build_connect_request, build_connect_response
from nbtunnel.core.streams import ConnectRequest
from nbtunnel.transport.http2 import ConnectorH2Connection, EdgeH2Connection

HEADERS = [("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0"),
           ("Accept", "text/html,application/xhtml+xml"), ("Accept-Language", "en-US,en"),
           ("Accept-Encoding", "gzip, deflate, br"), ("Cf-Connecting-Ip", "127.0.0.1"),
           ("X-Forwarded-For", "127.0.0.1"), ("X-Forwarded-Proto", "http")]
RESPONSE = [("Content-Type", "text/plain"), ("Content-Length", "12"),
            ("Date", "Tue, 01 Dec 2026 00:00:00 GMT")]


class _Pipe:
    """One direction of the in-memory connection: writes reach the peer on the next pass."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.peer: asyncio.Protocol | None = None
        self.closing = False

    def write(self, data: bytes) -> None:
        assert self.peer is not None
        self.loop.call_soon(self.peer.data_received, bytes(data))  # type: ignore[attr-defined]

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


async def _pair() -> tuple[EdgeH2Connection, ConnectorH2Connection]:
    loop = asyncio.get_running_loop()
    edge, connector = EdgeH2Connection(), ConnectorH2Connection()
    to_connector, to_edge = _Pipe(loop), _Pipe(loop)
    to_connector.peer, to_edge.peer = connector, edge
    connector.connection_made(to_edge)  # type: ignore[arg-type]
    edge.connection_made(to_connector)  # type: ignore[arg-type]
    return edge, connector


async def run(n: int, c: int, profile: bool) -> None:
    edge, connector = await _pair()
    control = await edge.control_stream()
    await connector.control_stream()
    left = n

    async def serve() -> None:
        while True:
            stream = await connector.accept_stream()
            head = await stream.receive_request()
            assert isinstance(head, ConnectRequest)
            await stream.send_response(build_connect_response(200, RESPONSE))
            await stream.write(b"hello world\n")
            stream.write_eof()

    async def serve_all() -> None:
        async with asyncio.TaskGroup() as tg:
            while True:
                stream = await connector.accept_stream()
                tg.create_task(_one(stream))

    async def _one(stream: Any) -> None:
        head = await stream.receive_request()
        assert isinstance(head, ConnectRequest)
        await stream.send_response(build_connect_response(200, RESPONSE))
        await stream.write(b"hello world\n")
        stream.write_eof()

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            stream = edge.open_stream()
            await stream.send_request(build_connect_request(
                "GET", "app.example.com", "/", [("Cf-Ray", f"{left:016x}-LOC"), *HEADERS],
                scheme="http"), end_stream=True)
            await stream.receive_response()
            body = b""
            while chunk := await stream.read():
                body += chunk
            assert body == b"hello world\n", body

    server = asyncio.create_task(serve_all())
    left = 500  # warm-up: HPACK tables, caches
    await asyncio.gather(*(client() for _ in range(c)))
    left = n
    prof = cProfile.Profile() if profile else None
    t0, w0 = time.process_time(), time.perf_counter()
    if prof:
        prof.enable()
    await asyncio.gather(*(client() for _ in range(c)))
    if prof:
        prof.disable()
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    print(f"{n} requests, c={c}: {1e6 * cpu / n:.1f} us CPU per request (edge + connector), "
          f"{n / wall:,.0f} req/s in one process")
    if prof:
        st = pstats.Stats(prof)
        calls = sum(v[1] for v in st.stats.values())  # type: ignore[attr-defined]
        print(f"{calls / n:.0f} Python calls per request")
        st.sort_stats("tottime").print_stats(30)
    server.cancel()
    del control
    edge.close()
    connector.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("-c", type=int, default=50)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    asyncio.run(run(args.n, args.c, args.profile))


if __name__ == "__main__":
    main()
