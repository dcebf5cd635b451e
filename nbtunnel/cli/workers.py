"""`nbtunnel edge --workers N`: N edge processes on the same UDP/TCP ports.

One asyncio loop uses one core; N processes share the public front, the connector listener and
the API through SO_REUSEPORT (the kernel spreads connections over them by address). Each worker
is an edge of its own in the deployment (`<edge id>-w<i>`): they share the PostgreSQL store and
the Redis presence, so a request reaching one worker for a tunnel held by another is forwarded
over the peer link. The parent only supervises: it creates the CA once, starts the workers in
their own session (a terminal's Ctrl-C reaches only the parent), forwards the first SIGINT or
SIGTERM as one SIGTERM each (every worker drains), kills them on a second signal, and stops all
of them if one exits on its own.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from nbtunnel.edge.cluster import default_edge_id
from nbtunnel.edge.store import private_dir
from nbtunnel.home import default_home
from nbtunnel.transport.tls import LocalCA

log = logging.getLogger("nbtunnel")

WORKER_ENV = "NBTUNNEL_EDGE_WORKER"


def check_workers(args: argparse.Namespace) -> str | None:
    """The reason `--workers` cannot run, or None."""
    if args.workers < 1:
        return "--workers must be at least 1"
    if args.workers > 1 and not (args.store or "").startswith(("postgresql://", "postgres://")):
        return "--workers N > 1 needs --store postgresql://... (the workers share one store)"
    if args.workers > 1 and not args.presence:
        return "--workers N > 1 needs --presence redis://... (the workers share live state)"
    return None


def _child_argv(argv: list[str], index: int, edge_id: str) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    return [*out, "--edge-id", f"{edge_id}-w{index}"]


def run_workers(args: argparse.Namespace, argv: list[str]) -> int:
    state = args.state_dir or default_home() / "edge"
    private_dir(state)
    LocalCA.load_or_create(state)  # once, before the workers race to create it
    base = args.edge_id or default_edge_id(args.location)
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL if stopping else signal.SIGTERM)
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for index in range(args.workers):
        env = {**os.environ, WORKER_ENV: str(index)}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "nbtunnel", *_child_argv(argv, index, base)],
            env=env, start_new_session=True, stdin=subprocess.DEVNULL))
    log.info("edge %s: %d workers (pids %s)", base, len(procs),
             ", ".join(str(p.pid) for p in procs))
    while any(p.poll() is None for p in procs):
        for proc in procs:
            code = proc.poll()
            if code is not None and not stopping:
                log.error("edge worker %d exited (%d); stopping the others", proc.pid, code)
                stop(signal.SIGTERM, None)
        time.sleep(0.2)
    codes = [p.returncode for p in procs]
    return 0 if stopping and all(c == 0 for c in codes) else max(1, *codes)
