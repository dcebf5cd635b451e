"""`nbtunnel edge --workers N`: N edge processes on the same UDP/TCP ports.

One asyncio loop uses one core; N processes share the public front, the connector listener and
the API through SO_REUSEPORT (the kernel spreads connections over them by address). Each worker
is an edge of its own in the deployment (`<edge id>-w<i>`): they share the PostgreSQL store and
the Redis presence, so a request reaching one worker for a tunnel held by another is forwarded
over the peer link. The parent only supervises: it creates the CA once, starts the workers in
their own session (a terminal's Ctrl-C reaches only the parent), forwards the first SIGINT or
SIGTERM as one SIGTERM each (every worker drains), kills them on a second signal, and restarts
a worker that crashes once it served (under the same edge id; at most MAX_RESTARTS per
RESTART_WINDOW). A worker that exits before it served stops them all: that is a configuration
error, not a crash. Workers say they serve with one byte on a pipe (`announce_ready`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from types import FrameType

from nbtunnel.edge.cluster import default_edge_id
from nbtunnel.edge.state_files import private_dir
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


READY_ENV = "NBTUNNEL_EDGE_WORKER_READY"
MAX_RESTARTS = 5
RESTART_WINDOW = 300.0
"""A worker that crashes after it was serving is restarted, at most MAX_RESTARTS times per
RESTART_WINDOW; one that exits before it served (a bad flag, the database unreachable) would
only loop, so every worker is stopped instead."""


def announce_ready() -> None:
    """Called by a worker once it serves: one byte on the pipe its parent gave it."""
    fd = os.environ.pop(READY_ENV, None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.write(int(fd), b"r")
            os.close(int(fd))


class _Worker:
    """One worker slot: the index (and edge id) survive restarts, the process does not."""

    def __init__(self, index: int, argv: list[str]) -> None:
        self.index, self.argv = index, argv
        self.restarts: deque[float] = deque()
        self.ready_fd = -1
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.ready = False
        self.close()
        self.ready_fd, write_fd = os.pipe()
        os.set_blocking(self.ready_fd, False)
        env = {**os.environ, WORKER_ENV: str(self.index), READY_ENV: str(write_fd)}
        try:
            return subprocess.Popen([sys.executable, "-m", "nbtunnel", *self.argv], env=env,
                                    start_new_session=True, stdin=subprocess.DEVNULL,
                                    pass_fds=(write_fd,))
        finally:
            os.close(write_fd)

    def poll_ready(self) -> None:
        if not self.ready:
            with contextlib.suppress(BlockingIOError):
                self.ready = os.read(self.ready_fd, 1) == b"r"

    def restart(self) -> str | None:
        """Start it again, or say why not."""
        self.poll_ready()
        if not self.ready:
            return "it never served"
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > RESTART_WINDOW:
            self.restarts.popleft()
        if len(self.restarts) >= MAX_RESTARTS:
            return f"it was restarted {MAX_RESTARTS} times in {RESTART_WINDOW:.0f}s"
        self.restarts.append(now)
        self.proc = self._spawn()
        return None

    def close(self) -> None:
        if self.ready_fd >= 0:
            os.close(self.ready_fd)
            self.ready_fd = -1


def run_workers(args: argparse.Namespace, argv: list[str]) -> int:
    state = args.state_dir or default_home() / "edge"
    private_dir(state)
    LocalCA.load_or_create(state)  # once, before the workers race to create it
    base = args.edge_id or default_edge_id(args.location)
    workers: list[_Worker] = []
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        for worker in workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGKILL if stopping else signal.SIGTERM)
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    workers.extend(_Worker(i, _child_argv(argv, i, base)) for i in range(args.workers))
    log.info("edge %s: %d workers (pids %s)", base, len(workers),
             ", ".join(str(w.proc.pid) for w in workers))
    failed = False
    while True:
        ended = all(w.proc.poll() is not None for w in workers)  # before: every exit is seen
        for worker in workers:
            worker.poll_ready()
            code = worker.proc.poll()
            if code is None or stopping:
                continue
            name, pid = f"{base}-w{worker.index}", worker.proc.pid
            why = worker.restart()
            if why is None:
                log.error("edge worker %s (pid %d) exited (%d); restarted as pid %d", name,
                          pid, code, worker.proc.pid)
            else:
                log.error("edge worker %s (pid %d) exited (%d) and %s; stopping the others",
                          name, pid, code, why)
                failed = True
                stop(signal.SIGTERM, None)
        if ended and all(w.proc.poll() is not None for w in workers):
            break
        time.sleep(0.2)
    for worker in workers:
        worker.close()
    codes = [w.proc.returncode for w in workers]
    return 0 if stopping and not failed and all(c == 0 for c in codes) else max(1, *codes)
