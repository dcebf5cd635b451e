"""Fallback HTTP/1.1 load generator, used by tunnel_bench.py when `wrk` is not installed.

    python bench/_loadgen.py --url http://127.0.0.1:PORT/ --host NAME -c 50 -d 5

Runs ``-c`` keep-alive connections on raw asyncio sockets (uvloop when installed), each
sending one GET at a time for ``-d`` seconds (and at most ``--max-requests``), and prints one
JSON object: requests, errors, seconds, rps, p50_ms, p99_ms. A connection that fails is
counted as an error and reopened. It is a single Python process, so it tops out at a few
10k requests/s: enough for the tunnel, maybe not for the direct runs (wrk is better).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from urllib.parse import urlsplit


async def _read_response(reader: asyncio.StreamReader) -> bool:
    """Read one response; returns whether the connection may be reused."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = -1
    chunked = False
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            close = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length >= 0:
        await reader.readexactly(length)
    else:
        await reader.read()
        close = True
    if not 200 <= status < 400:
        raise ValueError(f"status {status}")
    return not close


async def run(url: str, host: str, conns: int, seconds: float, max_requests: int) -> dict:
    parts = urlsplit(url)
    addr, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path or "/"
    request = f"GET {path} HTTP/1.1\r\nHost: {host or parts.netloc}\r\n\r\n".encode()
    latencies: list[float] = []
    errors = 0
    issued = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        nonlocal errors, issued
        writer = None
        while time.perf_counter() < deadline and issued < max_requests:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(addr, port)
                issued += 1
                t0 = time.perf_counter()
                writer.write(request)
                left = deadline + 5 - t0
                keep = await asyncio.wait_for(_read_response(reader), max(left, 0.1))
                latencies.append(time.perf_counter() - t0)
                if not keep:
                    writer.close()
                    writer = None
            except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    TimeoutError):
                errors += 1
                if writer is not None:
                    writer.close()
                    writer = None
                await asyncio.sleep(0.01)
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    await asyncio.gather(*(worker() for _ in range(conns)))
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float | None:
        if not latencies:
            return None
        return 1000 * latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))]

    return {
        "requests": len(latencies), "errors": errors, "seconds": elapsed,
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": pct(50), "p99_ms": pct(99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--host", default="", help="Host header (default: from the URL)")
    parser.add_argument("-c", "--connections", type=int, default=50)
    parser.add_argument("-d", "--duration", type=float, default=5.0)
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(args.url, args.host, args.connections, args.duration,
                             args.max_requests))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
