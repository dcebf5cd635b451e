#!/usr/bin/env python3
"""Our connector at two commits (and the real cloudflared) on ONE edge, in interleaved rounds.

    git worktree add --detach /tmp/nbt-base <commit>          # the "before" checkout
    .venv/bin/python bench/connector_ab.py --base /tmp/nbt-base [--protocol quic|http2]
        [--rounds 3] [--seconds 4] [-c 50] [--loop auto|asyncio]

One origin and one edge (this checkout) for the whole run; per round each connector in turn
(`base`: ``python -m nbtunnel`` with ``PYTHONPATH=BASE``, `this`: this checkout, `cf`: the
binary named by ``NBTUNNEL_CLOUDFLARED``, skipped when unset) registers one HA connection,
gets a 1 s warm-up and a ``wrk -t1 -cN`` cell, and is stopped. Printed per cell and as
medians: req/s, p50, and the CPU microseconds per request of the edge and of the connector
(from /proc). Rounds are interleaved so that other load on a shared machine hits every
variant alike; CPU per request is the figure that load moves least.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_bench import Hop, start_cloudflared, start_edge, start_nbtunnel, start_origin
from tunnel_bench import BenchError, Proc, log, run_wrk


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, help="checkout of the 'before' commit")
    ap.add_argument("--protocol", choices=["quic", "http2"], default="quic")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=4)
    ap.add_argument("-c", "--conns", type=int, default=50)
    ap.add_argument("--loop", choices=["auto", "asyncio"], default="auto")
    args = ap.parse_args()
    cloudflared = os.environ.get("NBTUNNEL_CLOUDFLARED", "")
    variants = (["base"] if args.base else []) + ["this"] + (["cf"] if cloudflared else [])
    work = Path(tempfile.mkdtemp(prefix="nbtunnel-ab-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBTUNNEL_")}
    env.update(NBTUNNEL_HOME=str(work / "home"), PYTHONUNBUFFERED="1")
    if args.loop == "asyncio":
        env["NBTUNNEL_LOOP"] = "asyncio"
    procs: list[Proc] = []
    rows: dict[str, list[tuple[float, float, float, float]]] = {v: [] for v in variants}
    try:
        _, origin_url = start_origin(work, env, procs)
        edge = start_edge(work, env, "qh3", "ab")
        procs.append(edge.proc)
        for r in range(args.rounds):
            for v in variants:
                started: list[Proc] = []
                try:
                    hop: Hop
                    if v == "cf":
                        hop = start_cloudflared(work, env, cloudflared, args.protocol, edge,
                                                origin_url, started)
                    else:
                        venv = {**env, "PYTHONPATH": str(args.base)} if v == "base" else env
                        hop = start_nbtunnel(work, venv, args.protocol, "qh3", edge,
                                             origin_url, 1, started)
                    assert hop.middle is not None
                    run_wrk(hop.url, hop.host, args.conns, 1)  # warm-up
                    pair = [edge.proc, hop.middle]
                    before = [p.cpu_seconds() for p in pair]
                    out = run_wrk(hop.url, hop.host, args.conns, args.seconds)
                    edge_cpu, hop_cpu = (p.cpu_seconds() - b for p, b in zip(pair, before,
                                                                               strict=True))
                    n = max(out["requests"], 1)
                    row = (out["rps"], out["p50_ms"] or 0.0, 1e6 * edge_cpu / n,
                           1e6 * hop_cpu / n)
                    rows[v].append(row)
                    print(f"round {r} {v:5s} {row[0]:8,.0f} req/s  p50 {row[1]:6.2f} ms  "
                          f"edge {row[2]:4.0f} us  connector {row[3]:4.0f} us  "
                          f"load {os.getloadavg()[0]:.1f}", flush=True)
                finally:
                    for p in started:
                        p.stop(5.0)
                        p.kill()
        print(f"medians ({args.protocol}, c={args.conns}, {args.rounds} rounds):")
        for v, cells in rows.items():
            m = [statistics.median(x) for x in zip(*cells, strict=True)]
            print(f"  {v:5s} {m[0]:8,.0f} req/s  p50 {m[1]:6.2f} ms  edge {m[2]:4.0f} us  "
                  f"connector {m[3]:4.0f} us")
        return 0
    except BenchError as exc:
        log(f"failed: {exc}")
        return 1
    finally:
        for p in reversed(procs):
            p.stop(5.0)
            p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
