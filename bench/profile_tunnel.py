#!/usr/bin/env python3
"""Profile the edge and our connector under load: where does a request (or a MB) go?

    .venv/bin/python bench/profile_tunnel.py [--protocol quic|http2] [-c 50] [-d 5] [--top 25]
    .venv/bin/python bench/profile_tunnel.py --bulk down|up [--bulk-mb 200] [--ha 1]

Starts the origin, an edge and our connector, runs wrk (or bench/_loadgen.py) against the
tunnel (or, with ``--bulk``, one curl download or upload) and prints, per process, the CPU
microseconds per request (milliseconds per MB) and the top functions:

- ``--sampler py-spy`` (default when py-spy is installed: ``pip install py-spy``): samples both
  processes during the load window; share of busy samples per function, own and inclusive.
  Little overhead, so the shares are close to where the CPU really goes.
- ``--sampler cprofile``: each process runs under cProfile (switched on for the load window by
  SIGUSR1, dumped by SIGUSR2); Python calls per request and the pstats tables. cProfile
  inflates functions that make many small calls, so use it for call counts, py-spy for time.

`--save DIR` keeps the raw files (.pstats or py-spy's collapsed stacks).
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_bench import start_edge, start_nbtunnel, start_origin
from tunnel_bench import (
    MB,
    BenchError,
    Proc,
    download,
    log,
    pick_loadgen,
    run_pyload,
    run_wrk,
    upload,
)

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


def _per_unit(cpu: float, units: int, bulk: bool) -> str:
    if bulk:
        return f"{1e3 * cpu / max(units / 1e6, 1e-9):.1f} ms CPU per MB"
    return f"{1e6 * cpu / max(units, 1):.0f} us CPU per request"


def report(name: str, path: Path, units: int, cpu: float, top: int, bulk: bool = False) -> str:
    st = pstats.Stats(str(path))
    calls = sum(v[1] for v in st.stats.values())  # type: ignore[attr-defined]
    out = io.StringIO()
    per = f"{calls / max(units / 1e6, 1e-9):.0f} Python calls per MB" if bulk else (
        f"{calls / max(units, 1):.0f} Python calls per request")
    out.write(f"\n=== {name}: {_per_unit(cpu, units, bulk)} (under cProfile), {per}\n")
    for key in ("tottime", "cumulative"):
        buf = io.StringIO()
        pstats.Stats(str(path), stream=buf).sort_stats(key).print_stats(top)
        text = buf.getvalue()
        out.write(f"--- by {key}\n" + text[text.find("   ncalls"):])
    return out.getvalue()


def spy_report(name: str, path: Path, units: int, cpu: float, top: int,
               bulk: bool = False) -> str:
    """Own and inclusive share of samples per function from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        frames = [f for f in frames if f]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    out = [f"\n=== {name}: {_per_unit(cpu, units, bulk)}, {total} busy samples"]
    for title, counter in (("own", own), ("inclusive", incl)):
        out.append(f"--- by {title} samples")
        for func, n in counter.most_common(top):
            out.append(f"{100 * n / max(total, 1):6.1f}%  {func}")
    return "\n".join(out)


def _short(frame: str) -> str:
    """'func (path/to/file.py:12)' -> 'func (file.py)'; process/thread frames dropped."""
    func, _, where = frame.partition(" (")
    if not where:
        return ""
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = path.split("/")
    short = "/".join(parts[-2:]) if "site-packages" in path or "nbtunnel" in path else parts[-1]
    return f"{func} ({short})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", choices=["quic", "http2"], default="quic")
    ap.add_argument("-c", "--conns", type=int, default=50)
    ap.add_argument("-d", "--seconds", type=int, default=5)
    ap.add_argument("--ha", type=int, default=4)
    ap.add_argument("--bulk", choices=["down", "up"],
                    help="profile one transfer through the tunnel instead of small requests")
    ap.add_argument("--bulk-mb", type=int, default=200)
    ap.add_argument("--loopback-datagram", type=int, default=None, metavar="BYTES",
                    help="NBTUNNEL_QUIC_LOOPBACK_DATAGRAM for edge and connector (default: "
                         "nbtunnel's; 0: off, 1452-byte datagrams at most)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--quic-backend", choices=["qh3", "aioquic"], default="qh3")
    ap.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    ap.add_argument("--loop", choices=["auto", "asyncio"], default="auto",
                    help="event loop of edge and connector (auto: uvloop when installed)")
    ap.add_argument("--save", type=Path, help="keep the raw profiles here")
    ap.add_argument("--sampler", choices=["py-spy", "cprofile"],
                    default="py-spy" if shutil.which("py-spy") or Path(sys.executable).with_name(
                        "py-spy").exists() else "cprofile")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="nbtunnel-profile-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBTUNNEL_")}
    env.update(NBTUNNEL_HOME=str(work / "home"), PYTHONUNBUFFERED="1")
    if args.loop == "asyncio":
        env["NBTUNNEL_LOOP"] = "asyncio"
    if args.loopback_datagram is not None:
        env["NBTUNNEL_QUIC_LOOPBACK_DATAGRAM"] = str(args.loopback_datagram)
    procs: list[Proc] = []
    try:
        _, origin_url = start_origin(work, env, procs)
        # start_edge/start_nbtunnel run `sys.executable -m nbtunnel`: wrap them in cProfile
        wrapper = work / "wrap.py"
        wrapper.write_text(WRAP)
        env_e = {**env, "NBTUNNEL_PROFILE_OUT": str(work / "edge.pstats")}
        spy = args.sampler == "py-spy"
        cmd = None if spy else [sys.executable, str(wrapper)]
        edge = start_edge(work, env_e, args.quic_backend, "profile", cmd)
        procs.append(edge.proc)
        env_c = {**env, "NBTUNNEL_PROFILE_OUT": str(work / "connector.pstats")}
        started: list[Proc] = []
        hop = start_nbtunnel(work, env_c, args.protocol, args.quic_backend, edge, origin_url,
                             args.ha, started, cmd)
        procs += started
        assert hop.middle is not None
        run = run_wrk if pick_loadgen(args.loadgen) == "wrk" else run_pyload
        run(hop.url, hop.host, args.conns if not args.bulk else 1, 1)  # warm-up
        blob = work / "blob"
        if args.bulk == "up":
            with blob.open("wb") as f:
                f.truncate(args.bulk_mb * MB)
        pair = [edge.proc, hop.middle]
        names = ("edge", "connector")
        spies = []
        if spy:
            exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            spies = [subprocess.Popen(
                [exe, "record", "-p", str(p.pid), "-r", "200", "-d",
                 str(600 if args.bulk else args.seconds), "-f",
                 "raw", "--nonblocking", "-o", str(work / f"{name}.spy")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for p, name in zip(pair, names, strict=True)]
        else:
            for p in pair:
                os.kill(p.pid, signal.SIGUSR1)
        before = [p.cpu_seconds() for p in pair]
        if args.bulk:
            log(f"profiling {args.protocol} {args.bulk} {args.bulk_mb} MB ({args.sampler})")
            base, size = hop.url.rstrip("/"), args.bulk_mb * MB
            res = (download(base, hop.host, size, 120) if args.bulk == "down" else
                   upload(base, hop.host, blob, size, 120, work / "sink.json"))
        else:
            log(f"profiling {args.protocol} c={args.conns} for {args.seconds}s ({args.sampler})")
            res = run(hop.url, hop.host, args.conns, args.seconds)
        cpu = [p.cpu_seconds() - b for p, b in zip(pair, before, strict=True)]
        if spy:
            for sp in spies:
                if args.bulk:
                    sp.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
                sp.wait(30)
        else:
            for p in pair:
                os.kill(p.pid, signal.SIGUSR2)
            for p in pair:
                p.wait_for("PROFILE DUMPED", 30)
        if args.bulk:
            print(f"{args.bulk} {args.bulk_mb} MB: {res['mbps']:.1f} MB/s")
            units = args.bulk_mb * MB
        else:
            print(f"{res['requests']} requests, {res['rps']:.0f} req/s, errors {res['errors']}")
            units = res["requests"]
        ext = "spy" if spy else "pstats"
        for name, c in zip(names, cpu, strict=True):
            fn = spy_report if spy else report
            print(fn(name, work / f"{name}.{ext}", units, c, args.top, bool(args.bulk)))
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            for name in names:
                shutil.copy(work / f"{name}.{ext}", args.save / f"{name}.{ext}")
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
