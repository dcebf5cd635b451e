"""`nbtunnel lab up` (foreground until Ctrl-C, or ``--detach``) and `nbtunnel lab down`.

``up`` writes ``lab.pid`` and ``lab.json`` (what runs where) in the state directory; ``down``
signals that pid and waits for a clean exit, so a lab started in the background is stopped
the same graceful way as Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from nbtunnel.cli.logs import setup_logging
from nbtunnel.home import default_home
from nbtunnel_lab.lab import Lab, LabConfig, LabError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nbtunnel lab",
                                     description="Run the lab: edge, connectors, origin and "
                                     "vantage points on 127.0.0.1.")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = sub.add_parser("up", help="start the lab (foreground until Ctrl-C, or --detach)")
    up.add_argument("--origin", default=None, help="origin URL (default: built-in hello world)")
    up.add_argument("--connectors", type=int, default=1, help="connector replicas (1)")
    up.add_argument("--ha-connections", type=int, default=2, help="connections each (2)")
    up.add_argument("--no-public", action="store_true", help="no mitmproxy on the public side")
    up.add_argument("--no-tunnel", action="store_true", help="no QUIC relay on the tunnel side")
    up.add_argument("--no-origin-side", action="store_true",
                    help="no mitmproxy between connector and origin")
    up.add_argument("--detach", action="store_true", help="run in the background; stop with "
                    "`nbtunnel lab down`")
    down = sub.add_parser("down", help="stop a lab started in the background")
    for p in (up, down):
        p.add_argument("--state-dir", type=Path, default=None,
                       help="pid file and lab state (~/.nbtunnel/lab or $NBTUNNEL_HOME/lab)")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    state = args.state_dir or default_home() / "lab"
    state.mkdir(parents=True, exist_ok=True)
    if args.action == "down":
        return down(state)
    if args.detach:
        return detach(state, [a for a in argv if a != "--detach"])
    setup_logging(os.environ.get("NBTUNNEL_LOGLEVEL", "warn"), "text")
    config = LabConfig(origin=args.origin, connectors=args.connectors,
                       ha_connections=args.ha_connections, public=not args.no_public,
                       tunnel=not args.no_tunnel, origin_side=not args.no_origin_side)
    return up(state, config)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (nobody reaped it) has exited too
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def up(state: Path, config: LabConfig) -> int:
    pid_file, info_file = state / "lab.pid", state / "lab.json"
    if pid_file.exists() and _pid_alive(int(pid_file.read_text() or 0)):
        print(f"a lab is already running (pid {pid_file.read_text()}); "
              "`nbtunnel lab down` first", file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    lab = Lab(config)
    try:
        lab.start()
    except LabError as exc:
        print(f"nbtunnel lab: {exc}", file=sys.stderr)
        return 1
    try:
        pid_file.write_text(str(os.getpid()))
        info_file.write_text(json.dumps({"pid": os.getpid(), "url": lab.url,
                                         "where": dict(lab.where())}, indent=2))
        print(f"nbtunnel lab is running (stop with Ctrl-C or `nbtunnel lab down`)\n{lab}",
              flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        lab.stop()
        for f in (pid_file, info_file):
            f.unlink(missing_ok=True)
        print("nbtunnel lab stopped", flush=True)
    return 0


def detach(state: Path, argv: list[str]) -> int:
    info_file = state / "lab.json"
    info_file.unlink(missing_ok=True)
    log = (state / "lab.log").open("wb")
    cmd = [sys.executable, "-m", "nbtunnel", "lab", *argv]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"nbtunnel lab: failed to start, see {state / 'lab.log'}", file=sys.stderr)
            return 1
        if info_file.exists():
            info = json.loads(info_file.read_text())
            print(f"nbtunnel lab is running in the background (pid {info['pid']})")
            for k, v in info["where"].items():
                print(f"  {k}: {v}")
            return 0
        time.sleep(0.1)
    proc.terminate()
    print("nbtunnel lab: did not come up within 90s", file=sys.stderr)
    return 1


def down(state: Path) -> int:
    pid_file = state / "lab.pid"
    if not pid_file.exists():
        print("no lab is running (no pid file)", file=sys.stderr)
        return 1
    pid = int(pid_file.read_text() or 0)
    if not pid or not _pid_alive(pid):
        pid_file.unlink(missing_ok=True)
        print("no lab is running (stale pid file removed)", file=sys.stderr)
        return 1
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while pid_file.exists() and _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    while _pid_alive(pid) and time.monotonic() < deadline:  # it removes the file, then exits
        time.sleep(0.1)
    if _pid_alive(pid):
        print(f"lab pid {pid} did not stop within 60s", file=sys.stderr)
        return 1
    print(f"nbtunnel lab (pid {pid}) stopped")
    return 0
