#!/usr/bin/env python3
"""What inspection costs: requests/s and latency through the lab, vantage points off and on.

    .venv-lab/bin/python bench/lab_bench.py [--quick] [--json out.json]

For each configuration (no vantage point; only public, only tunnel, only origin; all three) it
starts a ``Lab`` (hello-world origin, one connector, 2 HA connections), warms up, then runs
``bench/_loadgen.py`` in its own process against the lab's public address: keep-alive GETs of
``/`` (about 1.4 KB) at concurrency 1 and 10, each for a fixed time. Needs the ``lab`` extra.
Errors are the load generator's (non-2xx/3xx, timeouts, resets); ``reconn`` counts connector
reconnects during the run (0 expected).
The UDP shim (for blackholes) is always on, so "none" includes one extra UDP hop in Python.
Every run is bounded (``-d`` seconds per load, a timeout per process); the lab stops after each.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nbtunnel_lab import Lab

LOADGEN = Path(__file__).resolve().parent / "_loadgen.py"
CONFIGS: dict[str, dict[str, bool]] = {
    "none": {"public": False, "tunnel": False, "origin_side": False},
    "public": {"public": True, "tunnel": False, "origin_side": False},
    "tunnel": {"public": False, "tunnel": True, "origin_side": False},
    "origin": {"public": False, "tunnel": False, "origin_side": True},
    "all three": {"public": True, "tunnel": True, "origin_side": True},
}


def load(lab: Lab, conns: int, seconds: float) -> dict[str, Any]:
    """One bounded load run in a separate process (so it does not share the lab's GIL)."""
    host, port = lab.public_address
    proc = subprocess.run(
        [sys.executable, str(LOADGEN), "--url", f"http://{host}:{port}/", "--host", lab.hostname,
         "-c", str(conns), "-d", str(seconds)],
        capture_output=True, text=True, timeout=seconds + 60, check=True)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def measure(name: str, flags: dict[str, bool], seconds: float) -> dict[str, Any]:
    t0 = time.monotonic()
    with Lab(ha_connections=2, **flags) as lab:
        start = time.monotonic() - t0
        for _ in range(20):  # warm-up: connections, mitmproxy's first flows
            assert lab.request("/").status == 200
        row: dict[str, Any] = {"config": name, "start_s": start}
        for conns in (1, 10):
            r = load(lab, conns, seconds)
            row[f"c{conns}"] = r
        row["records"] = len(lab.store.snapshot())
        row["reconnects"] = len(lab.connection_events("reconnecting"))
        row["after"] = lab.request("/").status  # still healthy after the loads?
    return row


def table(rows: list[dict[str, Any]]) -> str:
    base = {c: rows[0][c]["rps"] for c in ("c1", "c10")}
    head = (f"{'vantage points':16}{'c1 req/s':>10}{'p50 ms':>8}{'p99 ms':>8}"
            f"{'c10 req/s':>11}{'p50 ms':>8}{'p99 ms':>8}{'vs none':>9}{'errors':>8}"
            f"{'reconn':>8}")
    lines = [head, "-" * len(head)]
    for row in rows:
        c1, c10 = row["c1"], row["c10"]
        rel = c10["rps"] / base["c10"] if base["c10"] else 0.0
        lines.append(
            f"{row['config']:16}{c1['rps']:>10.0f}{c1['p50_ms'] or 0:>8.1f}"
            f"{c1['p99_ms'] or 0:>8.1f}{c10['rps']:>11.0f}{c10['p50_ms'] or 0:>8.1f}"
            f"{c10['p99_ms'] or 0:>8.1f}{rel:>8.0%} {c1['errors'] + c10['errors']:>7}"
            f"{row['reconnects']:>8}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s per load instead of 5 s")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    seconds = 2.0 if args.quick else 5.0
    import mitmproxy.version

    print(f"lab bench: Python {platform.python_version()}, mitmproxy "
          f"{mitmproxy.version.VERSION}, {seconds:.0f} s per load, GET / keep-alive",
          flush=True)
    rows = []
    for name, flags in CONFIGS.items():
        rows.append(measure(name, flags, seconds))
        print(f"  {name}: done", flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
