"""Requests/s and latency through a tunnel opened by `%tunnel` inside a real kernel.

    .venv/bin/python bench/notebook_bench.py [--duration 5] [--concurrency 8]

Three rows, same origin (bench/_origin.py, its own process), same load generator (this process,
aiohttp, N concurrent keep-alive clients sending `GET /` for D seconds):

- kernel idle:  `%tunnel PORT` in an ipykernel started by jupyter_client; no cell running
- kernel busy:  the same tunnel while a cell spins in a pure-Python loop (GIL contention with
                the nbtunnel loop thread)
- kernel idle, --no-inspect: the same without the request inspector (its cost: the ratio of
                the two idle rows, printed below the table; measured three times each, interleaved)
- CLI:          `nbtunnel tunnel --url PORT` as its own process (embedded edge in both cases)

Bounded: about 8 x D seconds of load plus ~25 s of start-up. Prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent


@dataclass
class Result:
    label: str
    ok: int
    failed: int
    seconds: float
    latencies: list[float]
    cpu: float = 0.0  # the kernel process's CPU seconds during the row (0: not measured)

    def row(self) -> str:
        lat = sorted(self.latencies) or [float("nan")]

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000

        return (f"| {self.label:<22} | {self.ok / self.seconds:>9.0f} | {pct(0.5):>8.2f} | "
                f"{pct(0.99):>8.2f} | {self.ok:>7} | {self.failed:>6} |")


async def load(front: int, hostname: str, duration: float, concurrency: int,
               label: str) -> Result:
    url = f"http://127.0.0.1:{front}/"
    lat: list[float] = []
    failed = 0
    deadline = time.monotonic() + duration
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn,
                                     timeout=aiohttp.ClientTimeout(total=30)) as s:
        async def worker() -> None:
            nonlocal failed
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                try:
                    async with s.get(url, headers={"Host": hostname}) as r:
                        await r.read()
                        if r.status != 200:
                            failed += 1
                            continue
                except (aiohttp.ClientError, TimeoutError):
                    failed += 1
                    continue
                lat.append(time.perf_counter() - t0)

        started = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            for _ in range(concurrency):
                tg.create_task(worker())
        seconds = time.monotonic() - started
    return Result(label, len(lat), failed, seconds, lat)


def start_origin() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, str(HERE / "_origin.py")], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.match(r"PORT (\d+)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"origin did not start: {line!r}")
    return proc, int(m.group(1))


def kernel_rows(port: int, duration: float, concurrency: int, env: dict[str, str],
                switch_interval: float | None) -> list[Result]:
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(env=env)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        out: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])

        if switch_interval:
            kc.execute_interactive(f"import sys; sys.setswitchinterval({switch_interval})",
                                   timeout=30)
        kc.execute_interactive(f"%load_ext nbtunnel\nt = %tunnel {port}\nt.wait_ready(4)\n"
                               "print('TUNNEL', t.front[1], t.hostname)", timeout=60,
                               output_hook=hook)
        m = re.search(r"TUNNEL (\d+) (\S+)", "".join(out))
        if not m:
            raise SystemExit(f"the kernel did not open a tunnel: {''.join(out)}")
        front, hostname = int(m.group(1)), m.group(2)
        def cpu() -> float:
            before = len(out)
            kc.execute_interactive("import time as _t; print('CPU', _t.process_time())",
                                   timeout=30, output_hook=hook)
            return float(re.findall(r"CPU (\S+)", "".join(out[before:]))[-1])

        def measured(label: str) -> Result:
            asyncio.run(load(front, hostname, 1.0, concurrency, "warm-up"))
            start = cpu()
            result = asyncio.run(load(front, hostname, duration, concurrency, label))
            result.cpu = cpu() - start
            return result

        idle = measured("%tunnel, kernel idle")
        spin = duration + 2
        msg_id = kc.execute(f"import time\nend = time.time() + {spin}\nn = 0\n"
                            "while time.time() < end:\n    n += 1")
        time.sleep(0.5)  # let the busy loop start
        busy = asyncio.run(load(front, hostname, duration, concurrency, "%tunnel, kernel busy"))
        kc.get_shell_msg(timeout=spin + 30)  # the busy cell's reply
        del msg_id
        rows = [idle, busy]
        # interleaved with `idle` above, so that load from elsewhere hits both alike
        for inspect in ("--no-inspect", "", "--no-inspect", "", "--no-inspect"):
            kc.execute_interactive(f"%tunnel stop {port}\nt = %tunnel {port} {inspect}\n"
                                   "t.wait_ready(4)\nprint('TUNNEL', t.front[1], t.hostname)",
                                   timeout=60, output_hook=hook)
            found = re.findall(r"TUNNEL (\d+) (\S+)", "".join(out))
            front, hostname = int(found[-1][0]), found[-1][1]  # the tunnel just opened
            rows.append(measured(f"%tunnel {inspect or '(inspector)'}, idle"))
        kc.execute_interactive("%tunnel stop all", timeout=60, output_hook=hook)
        return rows
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def cli_row(port: int, duration: float, concurrency: int, env: dict[str, str]) -> Result:
    proc = subprocess.Popen([sys.executable, "-m", "nbtunnel", "tunnel", "--url", str(port),
                             "--http-port", "0", "--grace-period", "1s"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        text = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            text += line
            m = re.search(r"Host: (\S+)' http://127\.0\.0\.1:(\d+)/", text)
            if m:
                break
        else:
            raise SystemExit(f"the CLI did not print its URL: {text}")
        hostname, front = m.group(1), int(m.group(2))
        time.sleep(4)  # let the four HA connections register, as wait_ready(4) does above
        asyncio.run(load(front, hostname, 1.0, concurrency, "warm-up"))
        return asyncio.run(load(front, hostname, duration, concurrency, "CLI (own process)"))
    finally:
        proc.terminate()
        proc.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per row (5)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (8)")
    parser.add_argument("--switch-interval", type=float, default=None, metavar="S",
                        help="sys.setswitchinterval in the kernel (CPython default 0.005)")
    args = parser.parse_args()
    origin, port = start_origin()
    home = tempfile.mkdtemp(prefix="nbtunnel-bench-")
    env = dict(os.environ, NBTUNNEL_HOME=home, NBTUNNEL_HTTP_PORT="0")
    env.pop("NBTUNNEL_EDGE", None)
    try:
        rows = kernel_rows(port, args.duration, args.concurrency, env, args.switch_interval)
        rows.append(cli_row(port, args.duration, args.concurrency, env))
    finally:
        origin.terminate()
        origin.wait(10)
    print(f"\nGET / (12 bytes) through a quick tunnel, embedded edge, {args.concurrency} "
          f"concurrent clients, {args.duration:g} s per row, Python {sys.version.split()[0]}"
          + (f", kernel switch interval {args.switch_interval:g} s" if args.switch_interval
             else ""))
    print("| tunnel                 |     req/s |  p50 ms |  p99 ms |      ok | failed |")
    print("|------------------------|-----------|---------|---------|---------|--------|")
    for r in rows:
        print(r.row())
    on = [r for r in rows if r.label in ("%tunnel, kernel idle", "%tunnel (inspector), idle")]
    off = [r for r in rows if "--no-inspect" in r.label]
    if on and off:
        rate_on = sum(r.ok for r in on) / sum(r.seconds for r in on)
        rate_off = sum(r.ok for r in off) / sum(r.seconds for r in off)
        cpu_on = sum(r.cpu for r in on) / sum(r.ok for r in on) * 1e6
        cpu_off = sum(r.cpu for r in off) / sum(r.ok for r in off) * 1e6
        print(f"\ninspector on: {rate_on:.0f} req/s, off: {rate_off:.0f} req/s "
              f"({(1 - rate_on / rate_off) * 100:+.1f} % lower with it; target: under 10 %)\n"
              f"kernel CPU per request (tunnel + embedded edge, less sensitive to other load "
              f"on the machine): on {cpu_on:.0f} us, off {cpu_off:.0f} us "
              f"({(cpu_on / cpu_off - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    main()
