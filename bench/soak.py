"""Bounded soak: mixed traffic with aborts and slow clients through a real edge + connector.

    python bench/soak.py [--minutes 10] [--backend qh3] [--json]

Starts an origin, an edge and a connector (4 HA connections) as child processes (the same
setup as tunnel_bench.py), then runs for ``--minutes``:

- keep-alive clients doing small GETs back to back, and HEAD/GET pipelines;
- uploads (256 KiB), a third of them aborted with a TCP reset half-way;
- downloads (1 MB), half of them abandoned after the first bytes;
- long-polls (`/hold`) dropped after a moment;
- slow clients: heads dripped a byte at a time (the edge answers 408 at the head deadline)
  and readers that take a 1 MB download 4 KiB at a time.

RSS of the edge and the connector is sampled every 5 s. After the warm-up (the first fifth of
the run, at least 30 s) it prints each process's growth: the target is under 10 MB. It also
prints the outcome counts, and fails (exit 1) if any HA connection was replaced or a plain GET
fails at the end. Every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tunnel_bench import BenchError, Proc, Setup, sample_rss, start_all

SAMPLE_EVERY = 5.0
TARGET_MB = 10.0


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _status(reader: asyncio.StreamReader) -> tuple[int, int | None]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in lines
                   if line.lower().startswith(b"content-length:")), None)
    return int(lines[0].split()[1]), length


class Traffic:
    def __init__(self, s: Setup, stop: asyncio.Event) -> None:
        self.s = s
        self.stop = stop
        self.counts: Counter[str] = Counter()
        self.rng = random.Random(7)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(*self.s.front)

    def _req(self, method: str, path: str, extra: str = "") -> bytes:
        return f"{method} {path} HTTP/1.1\r\nHost: {self.s.hostname}\r\n{extra}\r\n".encode()

    async def loop(self, name: str, body: Any, pause: float) -> None:
        while not self.stop.is_set():
            try:
                async with asyncio.timeout(60):
                    await body()
                self.counts[f"{name} ok"] += 1
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    TimeoutError, ValueError) as exc:
                self.counts[f"{name} error {type(exc).__name__}"] += 1
            await asyncio.sleep(pause * self.rng.random())

    async def keepalive_gets(self) -> None:
        reader, writer = await self._open()
        try:
            for _ in range(50):
                writer.write(self._req("GET", "/"))
                status, length = await _status(reader)
                await reader.readexactly(length or 0)
                assert status == 200
            writer.write(self._req("HEAD", "/") + self._req("GET", "/"))
            await _status(reader)
            _, length = await _status(reader)
            await reader.readexactly(length or 0)
        finally:
            writer.close()

    async def upload(self) -> None:
        reader, writer = await self._open()
        size = 256 * 1024
        abort = self.rng.random() < 0.33
        writer.write(self._req("POST", "/sink", f"Content-Length: {size}\r\n"))
        chunk = b"u" * 16384
        try:
            for i in range(size // len(chunk)):
                writer.write(chunk)
                await writer.drain()
                if abort and i == 8:
                    _rst(writer)
                    self.counts["upload aborted"] += 1
                    return
            await _status(reader)
        finally:
            writer.close()

    async def download(self) -> None:
        reader, writer = await self._open()
        try:
            writer.write(self._req("GET", "/bytes/1000000"))
            _, length = await _status(reader)
            if self.rng.random() < 0.5:
                await reader.read(4096)
                _rst(writer)
                self.counts["download abandoned"] += 1
                return
            await reader.readexactly(length or 0)
        finally:
            writer.close()

    async def slow_reader(self) -> None:
        reader, writer = await self._open()
        try:
            writer.write(self._req("GET", "/bytes/1000000"))
            _, length = await _status(reader)
            left = length or 0
            while left:
                left -= len(await reader.read(min(4096, left)))
                await asyncio.sleep(0.01)
        finally:
            writer.close()

    async def hold(self) -> None:
        reader, writer = await self._open()
        try:
            writer.write(self._req("GET", "/hold?beat=0"))
            await _status(reader)
            await asyncio.sleep(self.rng.random() * 2)
            _rst(writer)
        finally:
            writer.close()

    async def slow_head(self) -> None:
        reader, writer = await self._open()
        answer = asyncio.ensure_future(_status(reader))
        try:
            for byte in self._req("GET", "/", "X-Slow: " + "s" * 100 + "\r\n"):
                if answer.done() or self.stop.is_set():
                    break
                writer.write(bytes([byte]))
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
                await asyncio.sleep(0.5)
            if not self.stop.is_set():
                status, _ = await answer
                self.counts[f"slow head answered {status}"] += 1
        finally:
            answer.cancel()
            await asyncio.gather(answer, return_exceptions=True)
            writer.close()


KINDS = ["keepalive", "upload", "download", "slow reader", "hold", "slow head"]


async def soak(s: Setup, minutes: float, out: dict[str, Any], only: list[str]) -> None:
    stop = asyncio.Event()
    t = Traffic(s, stop)
    plan = [("keepalive", t.keepalive_gets, 0.05, 8), ("upload", t.upload, 0.2, 3),
            ("download", t.download, 0.3, 3), ("slow reader", t.slow_reader, 1.0, 2),
            ("hold", t.hold, 0.5, 2), ("slow head", t.slow_head, 1.0, 4)]
    plan = [p for p in plan if not only or p[0] in only]
    duration = minutes * 60
    warmup = max(30.0, duration / 5)
    samples: list[tuple[float, dict[str, float | None]]] = []
    t0 = time.monotonic()
    async with asyncio.TaskGroup() as tg:
        for name, body, pause, n in plan:
            for _ in range(n):
                tg.create_task(t.loop(name, body, pause))
        while (elapsed := time.monotonic() - t0) < duration:
            samples.append((elapsed, sample_rss(s)))
            await asyncio.sleep(min(SAMPLE_EVERY, duration - elapsed))
        stop.set()
    samples.append((time.monotonic() - t0, sample_rss(s)))
    out["counts"] = dict(sorted(t.counts.items()))
    out["samples"] = [(round(at), r["edge"], r["connector"]) for at, r in samples]
    out["rss"] = {}
    for proc in ("edge", "connector"):
        after = [r[proc] for at, r in samples if at >= warmup and r[proc] is not None]
        base = after[0] if after else None
        out["rss"][proc] = {
            "start_mib": samples[0][1][proc], "after_warmup_mib": base,
            "max_mib": max(after) if after else None, "end_mib": after[-1] if after else None,
            "growth_mib": (after[-1] - base) if after and base is not None else None,
        }


def _registered(s: Setup) -> int:
    return s.connector.text("err").count("Registered tunnel connection")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="run time (default 10)")
    ap.add_argument("--backend", default="qh3", choices=["qh3", "aioquic"])
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--only", action="append", choices=KINDS, default=[], metavar="KIND",
                    help=f"run only this kind of traffic (repeatable; {', '.join(KINDS)})")
    ap.add_argument("--memdebug", metavar="PREFIX",
                    help="edge and connector write memory reports to PREFIX.<pid>.txt "
                         "(NBTUNNEL_MEMDEBUG, see nbtunnel/cli/memdebug.py)")
    ap.add_argument("--memdebug-every", type=float, default=30.0, metavar="S",
                    help="seconds between memory reports (default 30)")
    ap.add_argument("--malloc-trim", action="store_true",
                    help="with --memdebug: call malloc_trim after each report")
    ap.add_argument("--memdebug-refs", default="", metavar="NAMES",
                    help="with --memdebug: comma-separated class names to show referrers of")
    ap.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                    help="with --memdebug: trace allocations with this many frames (slow)")
    args = ap.parse_args()
    procs: list[Proc] = []
    out: dict[str, Any] = {"minutes": args.minutes, "backend": args.backend,
                           "only": args.only}
    try:
        with tempfile.TemporaryDirectory(prefix="nbtunnel-soak-") as tmp:
            extra = {"NBTUNNEL_MEMDEBUG": args.memdebug,
                     "NBTUNNEL_MEMDEBUG_EVERY": str(args.memdebug_every),
                     "NBTUNNEL_MEMDEBUG_FRAMES": str(args.tracemalloc),
                     "NBTUNNEL_MEMDEBUG_TRIM": "1" if args.malloc_trim else "0",
                     "NBTUNNEL_MEMDEBUG_REFS": args.memdebug_refs,
                     } if args.memdebug else {}
            s = start_all(Path(tmp), args.backend, False, procs, extra)
            registered = _registered(s)
            asyncio.run(soak(s, args.minutes, out, args.only))
            from tunnel_bench import http_get
            status, _ = http_get(s.front, s.hostname, "/")
            out["final_get"] = status
            out["connections_replaced"] = _registered(s) - registered
            for p in procs:
                p.stop(10)
    except BenchError as exc:
        print(f"soak failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for p in procs:
            p.kill()
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"soak: {args.minutes:g} min, backend {args.backend}")
        for name, n in out["counts"].items():
            print(f"  {name:36} {n}")
        for proc, r in out["rss"].items():
            print(f"  {proc:10} RSS start {r['start_mib']:.1f} MiB, after warm-up "
                  f"{r['after_warmup_mib']:.1f}, max {r['max_mib']:.1f}, end {r['end_mib']:.1f}"
                  f" -> growth {r['growth_mib']:+.1f} MiB (target < {TARGET_MB:g})")
        series = ", ".join(f"{at}s {e:.0f}/{c:.0f}" for at, e, c in out["samples"][::6]
                           if e is not None and c is not None)
        print(f"  RSS MiB edge/connector over time: {series}")
        print(f"  final GET {out['final_get']}, HA connections replaced: "
              f"{out['connections_replaced']}")
    ok = out["final_get"] == 200 and out["connections_replaced"] == 0 and all(
        r["growth_mib"] is not None and r["growth_mib"] < TARGET_MB for r in out["rss"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
