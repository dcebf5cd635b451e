#!/usr/bin/env python3
"""Benchmark TCP services through a tunnel and the HTTPS front, on loopback, in one run.

    .venv/bin/python bench/access_bench.py [--quick] [--json out.json]

Processes (all stopped at the end): a TCP origin (this file, `--tcp-origin`), the HTTP origin
(bench/_origin.py), `nbtunnel edge --https`, two quick-tunnel connectors (one `--url
tcp://ORIGIN`, one `--url http://ORIGIN`, 1 HA connection each) and `nbtunnel access tcp`
listening on a local port. Measures:

1. TCP throughput, one connection, download and upload of N MB: direct to the TCP origin vs
   through `nbtunnel access tcp` -> HTTPS front -> QUIC -> connector -> origin; and the HTTP
   path's MB/s (curl through the plain front) for the target "TCP >= HTTP";
2. short TCP sessions per second (connect, 16-byte echo, close), direct vs through access;
3. small requests/s (wrk, c=50) through the HTTPS front vs the plain HTTP front (target
   HTTPS >= 0.7x HTTP). wrk speaks HTTP/1.1 over TLS; HTTP/2 has no load generator here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tunnel_bench import HERE, MB, BenchError, Proc, download, log, run_wrk

CHUNK = 1 << 16


# -------------------------------------------------------------------------- the TCP origin


async def _serve_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """`D n\\n`: send n bytes; `U\\n`: read to EOF, answer the count; `E\\n`: echo to EOF."""
    try:
        line = await reader.readline()
        if line.startswith(b"D "):
            left = int(line[2:])
            block = b"x" * CHUNK
            while left > 0:
                writer.write(block[: min(left, CHUNK)])
                left -= CHUNK
                await writer.drain()
        elif line == b"U\n":
            n = 0
            while data := await reader.read(CHUNK):
                n += len(data)
            writer.write(b"%d\n" % n)
        elif line == b"E\n":
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
        await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def tcp_origin() -> None:
    server = await asyncio.start_server(_serve_tcp, "127.0.0.1", 0)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


# ---------------------------------------------------------------------------- measurements


def tcp_download(port: int, size: int) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        t0 = time.monotonic()
        s.sendall(b"D %d\n" % size)
        got = 0
        while chunk := s.recv(1 << 20):
            got += len(chunk)
        secs = time.monotonic() - t0
    if got != size:
        raise BenchError(f"download via port {port}: {got} of {size} bytes")
    return size / secs / MB


def tcp_upload(port: int, size: int) -> float:
    block = b"y" * (1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        t0 = time.monotonic()
        s.sendall(b"U\n")
        left = size
        while left > 0:
            s.sendall(block[: min(left, len(block))])
            left -= len(block)
        s.shutdown(socket.SHUT_WR)  # half-close: the origin answers the count after our EOF
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
        secs = time.monotonic() - t0
    if answer.strip() != str(size).encode():
        raise BenchError(f"upload via port {port}: the origin counted {answer!r}, sent {size}")
    return size / secs / MB


def short_sessions(port: int, seconds: float) -> float:
    """Sequential sessions: connect, echo 16 bytes, half-close, read to EOF, close."""
    n = 0
    deadline = time.monotonic() + seconds
    t0 = time.monotonic()
    while time.monotonic() < deadline:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"E\n" + b"0123456789abcdef")
            s.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := s.recv(4096):
                got += chunk
        if got != b"0123456789abcdef":
            raise BenchError(f"echo via port {port}: got {got!r}")
        n += 1
    return n / (time.monotonic() - t0)


# ------------------------------------------------------------------------------------ setup


def start(work: Path, procs: list[Proc]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBTUNNEL_")}
    env["NBTUNNEL_HOME"] = str(work / "home")
    env["PYTHONUNBUFFERED"] = "1"
    nbt = [sys.executable, "-m", "nbtunnel"]
    procs.append(Proc("tcp-origin", [sys.executable, __file__, "--tcp-origin"], work, env))
    tcp_port = int(procs[-1].wait_for(r"PORT (\d+)", 15)[0].group(1))
    procs.append(Proc("http-origin", [sys.executable, str(HERE / "_origin.py"), "--port", "0"],
                      work, env))
    http_port = int(procs[-1].wait_for(r"PORT (\d+)", 15)[0].group(1))
    state = work / "edge-state"
    edge = Proc("edge", [*nbt, "edge", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
                         "--https", "127.0.0.1:0", "--state-dir", str(state)], work, env)
    procs.append(edge)
    udp = edge.wait_for(r"udp(?:\+tcp)? +([\d.]+):(\d+)", 20)[0]
    front = edge.wait_for(r"public front: http://([\d.]+):(\d+)", 5)[0]
    https = edge.wait_for(r"https front:\s+https://([\d.]+):(\d+)", 5)[0]
    ca = state / "ca.pem"
    common = ["--edge", f"{udp.group(1)}:{udp.group(2)}", "--cacert", str(ca),
              "--quick-service", f"http://{front.group(1)}:{front.group(2)}",
              "--ha-connections", "1", "--grace-period", "1s"]
    names = {}
    for kind, url in (("tcp", f"tcp://127.0.0.1:{tcp_port}"),
                      ("http", f"http://127.0.0.1:{http_port}")):
        proc = Proc(f"connector-{kind}", [*nbt, "tunnel", *common, "--url", url], work, env)
        procs.append(proc)
        found = proc.wait_for(r"https?://([a-z0-9-]+(?:\.[a-z0-9-]+)+)", 20)
        names[kind] = next(m.group(1) for m in found if not m.group(1)[0].isdigit())
        proc.wait_for(r"Registered tunnel connection", 20, which="err")
    access = Proc("access", [*nbt, "access", "tcp", "--hostname", names["tcp"], "--url",
                             "127.0.0.1:0", "--edge-address",
                             f"{https.group(1)}:{https.group(2)}", "--edge-ca", str(ca)],
                  work, env)
    procs.append(access)
    local = int(access.wait_for(r"listening on 127\.0\.0\.1:(\d+)", 20, which="err")[0]
                .group(1))
    return {"tcp_port": tcp_port, "access_port": local, "names": names,
            "front": f"http://{front.group(1)}:{front.group(2)}",
            "https": f"https://{https.group(1)}:{https.group(2)}"}


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller transfers, 2 s runs")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--tcp-origin", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tcp_origin:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(tcp_origin())
        return 0
    size = (20 if args.quick else 100) * MB
    secs = 2 if args.quick else 5
    procs: list[Proc] = []
    res: dict[str, Any] = {"bytes": size, "seconds": secs}
    with tempfile.TemporaryDirectory(prefix="nbtunnel-access-bench-") as tmp:
        try:
            log("starting origins, edge (--https), two connectors and `nbtunnel access tcp`")
            s = start(Path(tmp), procs)
            log("TCP throughput: direct vs through nbtunnel access tcp")
            tcp_download(s["access_port"], 1 * MB)  # warm-up
            res["download_direct"] = tcp_download(s["tcp_port"], size)
            res["download_access"] = tcp_download(s["access_port"], size)
            res["upload_direct"] = tcp_upload(s["tcp_port"], size)
            res["upload_access"] = tcp_upload(s["access_port"], size)
            log("the HTTP path's MB/s (curl through the plain front)")
            res["download_http"] = download(s["front"], s["names"]["http"], size, 120)["mbps"]
            log("short sessions per second")
            res["sessions_direct"] = short_sessions(s["tcp_port"], secs)
            res["sessions_access"] = short_sessions(s["access_port"], secs)
            log("small requests: HTTPS front vs plain HTTP front (wrk -c50)")
            run_wrk(s["https"] + "/", s["names"]["http"], 10, 1)  # warm-up
            res["rps_http"] = run_wrk(s["front"] + "/", s["names"]["http"], 50, secs)["rps"]
            res["rps_https"] = run_wrk(s["https"] + "/", s["names"]["http"], 50, secs)["rps"]
        except BenchError as exc:
            log(f"FAILED: {exc}")
            for p in procs:
                log(p.tail(5))
            return 1
        finally:
            for p in reversed(procs):
                p.stop(5)
    rows = [
        ("TCP download MB/s", res["download_direct"], res["download_access"], ""),
        ("TCP upload MB/s", res["upload_direct"], res["upload_access"], ""),
        ("short sessions /s", res["sessions_direct"], res["sessions_access"], ""),
    ]
    print(f"{'metric':<28}{'direct':>12}{'access':>12}{'a/d':>8}")
    for name, d, a, _ in rows:
        print(f"{name:<28}{d:>12,.1f}{a:>12,.1f}{ratio(a, d):>8}")
    http = res["download_http"]
    ok = "ok" if res["download_access"] >= http else "MISS"
    print(f"TCP via access {res['download_access']:.1f} MB/s vs HTTP path {http:.1f} MB/s "
          f"(target >= HTTP): {ok}")
    rr = res["rps_https"] / res["rps_http"] if res["rps_http"] else 0.0
    print(f"small requests c=50: HTTPS front {res['rps_https']:,.0f} req/s vs HTTP front "
          f"{res['rps_http']:,.0f} req/s = {rr:.2f}x (target >= 0.7): "
          f"{'ok' if rr >= 0.7 else 'MISS'}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
