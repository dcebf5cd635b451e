#!/usr/bin/env python3
"""Profile the edge and our connector under small-request load: where does a request go?

    .venv/bin/python bench/profile_tunnel.py [--protocol quic|http2] [-c 50] [-d 5] [--top 25]

Starts the origin, an edge and our connector (each under cProfile, switched on only for the
load window by SIGUSR1 and dumped by SIGUSR2), runs wrk (or bench/_loadgen.py) against the
tunnel, then prints, per process, the CPU microseconds and the Python function calls per
request, and the top functions by own time and by cumulative time. cProfile roughly doubles
the cost of Python calls, so read the ranking and the call counts; bench/compare_bench.py
has the unprofiled CPU per request. `--save DIR` keeps the .pstats files (snakeviz, pstats).
"""

from __future__ import annotations

import argparse
import io
import os
import pstats
import shutil
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_bench import start_edge, start_nbtunnel, start_origin
from tunnel_bench import BenchError, Proc, log, pick_loadgen, run_pyload, run_wrk

WRAP = """
import cProfile, os, signal, sys
import time
_prof = cProfile.Profile(time.process_time)  # CPU time: wall time lies on a busy machine
def _on(*_):
    _prof.enable()
def _off(*_):
    _prof.disable()
    _prof.dump_stats(os.environ["NBTUNNEL_PROFILE_OUT"])
    print("PROFILE DUMPED", flush=True)
signal.signal(signal.SIGUSR1, _on)
signal.signal(signal.SIGUSR2, _off)
from nbtunnel.cli import main
sys.exit(main(sys.argv[1:]))
"""


def report(name: str, path: Path, requests: int, cpu: float, top: int) -> str:
    st = pstats.Stats(str(path))
    calls = sum(v[1] for v in st.stats.values())  # type: ignore[attr-defined]
    out = io.StringIO()
    out.write(f"\n=== {name}: {1e6 * cpu / max(requests, 1):.0f} us CPU per request "
              f"(under cProfile), {calls / max(requests, 1):.0f} Python calls per request\n")
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(str(path), stream=buf).sort_stats(key).print_stats(top)
        text = buf.getvalue()
        out.write(f"--- by {key}\n" + text[text.find("   ncalls"):])
    return out.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", choices=["quic", "http2"], default="quic")
    ap.add_argument("-c", "--conns", type=int, default=50)
    ap.add_argument("-d", "--seconds", type=int, default=5)
    ap.add_argument("--ha", type=int, default=4)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--quic-backend", choices=["qh3", "aioquic"], default="qh3")
    ap.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    ap.add_argument("--save", type=Path, help="keep edge.pstats and connector.pstats here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nbtunnel-profile-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBTUNNEL_")}
    env.update(NBTUNNEL_HOME=str(work / "home"), PYTHONUNBUFFERED="1")
    procs: list[Proc] = []
    try:
        _, origin_url = start_origin(work, env, procs)
        # start_edge/start_nbtunnel run `sys.executable -m nbtunnel`: wrap them in cProfile
        wrapper = work / "wrap.py"
        wrapper.write_text(WRAP)
        env_e = {**env, "NBTUNNEL_PROFILE_OUT": str(work / "edge.pstats")}
        cmd = [sys.executable, str(wrapper)]
        edge = start_edge(work, env_e, args.quic_backend, "profile", cmd)
        procs.append(edge.proc)
        env_c = {**env, "NBTUNNEL_PROFILE_OUT": str(work / "connector.pstats")}
        started: list[Proc] = []
        hop = start_nbtunnel(work, env_c, args.protocol, args.quic_backend, edge, origin_url,
                             args.ha, started, cmd)
        procs += started
        assert hop.middle is not None
        run = run_wrk if pick_loadgen(args.loadgen) == "wrk" else run_pyload
        run(hop.url, hop.host, args.conns, 1)  # warm-up
        pair = [edge.proc, hop.middle]
        for p in pair:
            os.kill(p.pid, signal.SIGUSR1)
        before = [p.cpu_seconds() for p in pair]
        log(f"profiling {args.protocol} c={args.conns} for {args.seconds}s")
        res = run(hop.url, hop.host, args.conns, args.seconds)
        cpu = [p.cpu_seconds() - b for p, b in zip(pair, before, strict=True)]
        for p in pair:
            os.kill(p.pid, signal.SIGUSR2)
        for p in pair:
            p.wait_for("PROFILE DUMPED", 30)
        print(f"{res['requests']} requests, {res['rps']:.0f} req/s, errors {res['errors']}")
        for name, c in (("edge", cpu[0]), ("connector", cpu[1])):
            print(report(name, work / f"{name}.pstats", res["requests"], c, args.top))
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            for name in ("edge", "connector"):
                shutil.copy(work / f"{name}.pstats", args.save / f"{name}.pstats")
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
