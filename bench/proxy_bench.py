#!/usr/bin/env python3
"""The connector's request path without the transport: StreamProxy on stand-in streams.

    .venv/bin/python bench/proxy_bench.py [-c 50] [-d 3] [--uvloop]    # CPU us per request
    .venv/bin/python bench/proxy_bench.py -n 2000                      # a fixed count, then exit
    bench/proxy_bench.py --instructions                                # cachegrind, see below

Each stand-in stream hands the proxy one ConnectRequest head (the bytes our edge sends for a
12-byte ``GET /``: decoded by the real ``HeadParser``) and encodes the ConnectResponse it
gets back, so the figure covers the Cap'n Proto heads, the proxy, the origin client and the
loop, and leaves out QUIC/HTTP/2. The origin is a raw asyncio server in another process that
answers every request with aiohttp's head and ``hello world``. ``--instructions`` runs the
fixed-count mode twice under ``valgrind --tool=cachegrind`` (1000 and 3000 requests) and
prints the instructions per request of this process: deterministic, so two commits compare on
a busy machine (run it from each checkout, e.g. with ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import time
from typing import Any

from nbtunnel.connector.ingress import Ingress
from nbtunnel.connector.origin import OriginClient
from nbtunnel.connector.proxy import StreamProxy
from nbtunnel.core.httpmeta import build_connect_request
from nbtunnel.core.streams import (
    ConnectRequest,
    ConnectResponse,
    HeadParser,
    encode_connect_request,
    encode_connect_response,
)

ORIGIN = r'''
import asyncio
RESP = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 12\r\n"
        b"Date: Mon, 30 Nov 2026 12:00:00 GMT\r\nServer: Python/3.11 aiohttp/3.11.18\r\n\r\n"
        b"hello world\n")
class Origin(asyncio.Protocol):
    def connection_made(self, transport): self.transport = transport
    def data_received(self, data): self.transport.write(RESP * data.count(b"\r\n\r\n"))
async def main():
    server = await asyncio.get_running_loop().create_server(Origin, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
'''
HOST = "brave-otter-sings-river.localhost:8080"


class Stream:
    """Just enough of a DataStream: the head is there at once, the answer is kept."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.out: list[bytes] = []
        self._stopped: asyncio.Future[None] | None = None

    async def receive_request(self) -> Any:
        parser = HeadParser("request")
        return parser.feed(self.raw)

    async def send_response(self, response: ConnectResponse) -> None:
        self.out.append(encode_connect_response(response))

    async def write(self, data: bytes) -> None:
        self.out.append(data)

    def write_eof(self) -> None:
        pass

    def reset(self, code: int = 0) -> None:
        pass

    def peer_stopped(self) -> asyncio.Future[None]:
        if self._stopped is None:
            self._stopped = asyncio.get_running_loop().create_future()
        return self._stopped

    async def read(self, n: int = 65536) -> bytes:
        return b""

    @property
    def readable(self) -> bool:
        return True


def request() -> ConnectRequest:
    return build_connect_request("GET", HOST, "/", [
        ("Host", HOST), ("Cf-Connecting-Ip", "127.0.0.1"), ("X-Forwarded-For", "127.0.0.1"),
        ("X-Forwarded-Proto", "http"), ("Cf-Visitor", '{"scheme":"http"}'),
        ("Cf-Ray", "8f3a2b1c0d9e8f7a-LHR")], scheme="http")


async def run(conns: int, seconds: float, count: int, port: int) -> None:
    raw = encode_connect_request(request())
    origin = OriginClient(connector_id="00000000-0000-0000-0000-000000000000")
    ingress = Ingress.single(f"http://127.0.0.1:{port}")
    proxy = StreamProxy(origin, lambda: ingress, lambda s: s, lambda _: None)
    done = 0
    stop = False

    async def worker() -> None:
        nonlocal done
        while not stop and (not count or done < count):
            done += 1
            await proxy.handle(Stream(raw), 0, lambda v, c: (v, ""))  # type: ignore[arg-type]

    tasks = [asyncio.create_task(worker()) for _ in range(conns)]
    if not count:
        await asyncio.sleep(1.0)  # warm-up
        n0, t0 = done, time.process_time()
        await asyncio.sleep(seconds)
        n1, t1 = done, time.process_time()
        stop = True
        print(f"{n1 - n0} requests, {(n1 - n0) / seconds:,.0f}/s, "
              f"{1e6 * (t1 - t0) / max(n1 - n0, 1):.1f} us CPU per request")
    await asyncio.gather(*tasks)
    heads = getattr(proxy, "heads", None)  # absent before the head watch
    if heads is not None:
        heads.close()
    await origin.aclose()


def instructions(extra: list[str]) -> int:
    def count(n: int) -> int:
        out = subprocess.run(
            ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
             sys.executable, __file__, "-n", str(n), *extra],
            capture_output=True, text=True, check=True).stderr
        m = re.search(r"I\s+refs:\s+([\d,]+)", out)
        assert m is not None, out[-2000:]
        return int(m.group(1).replace(",", ""))

    per = (count(3000) - count(1000)) // 2000
    print(f"{per:,} instructions per request")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--conns", type=int, default=50)
    ap.add_argument("-d", "--seconds", type=float, default=3.0)
    ap.add_argument("-n", "--count", type=int, default=0, help="this many requests, then exit")
    ap.add_argument("--uvloop", action="store_true")
    ap.add_argument("--instructions", action="store_true",
                    help="instructions per request under cachegrind (needs valgrind)")
    args = ap.parse_args()
    if args.instructions:
        return instructions(["-c", str(args.conns)] + (["--uvloop"] if args.uvloop else []))
    origin = subprocess.Popen([sys.executable, "-c", ORIGIN], stdout=subprocess.PIPE, text=True)
    try:
        assert origin.stdout is not None
        port = int(origin.stdout.readline())
        if args.uvloop:
            import uvloop
            uvloop.install()
        asyncio.run(run(args.conns, args.seconds, args.count, port))
    finally:
        origin.kill()
        origin.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
