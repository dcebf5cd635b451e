"""`with Lab()` and `nbtunnel lab up/down` leave no thread, process or bound port behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from lab_helpers import has_mitmproxy
from nbtunnel_lab import Lab


def _free(addr: tuple[str, int], kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:  # TIME_WAIT leftovers are fine; a listener is not
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError:
            return False
    return True


def test_with_block_leaves_nothing_behind() -> None:
    before = {t.ident for t in threading.enumerate()}
    with Lab(public=has_mitmproxy(), origin_side=has_mitmproxy(), ha_connections=2) as lab:
        assert lab.request("/").status == 200
        assert lab.edge is not None and lab.relay is not None and lab.shim is not None
        tcp = [lab.edge.public_address, lab.public_address]
        udp = [lab.edge.quic_address, lab.relay.address, lab.shim.address]
        where = dict(lab.where())
        assert "tunnel-side QUIC relay" in where and "public URL" in where
        assert any(t.name == "nbtunnel-lab" for t in threading.enumerate())
    assert all(_free(a, socket.SOCK_STREAM) for a in tcp), tcp
    assert all(_free(a, socket.SOCK_DGRAM) for a in udp), udp
    deadline = time.monotonic() + 5
    while {t.ident for t in threading.enumerate()} - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.ident not in before]


def test_cli_up_detach_then_down(tmp_path: Path) -> None:
    env = {**os.environ, "NBTUNNEL_HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "nbtunnel", "lab"]
    up = subprocess.run([*cmd, "up", "--detach", "--no-public", "--no-origin-side",
                         "--ha-connections", "1"], env=env, capture_output=True, text=True,
                        timeout=120)
    assert up.returncode == 0, up.stderr
    assert "tunnel-side QUIC relay" in up.stdout
    info = json.loads((tmp_path / "lab" / "lab.json").read_text())
    pid = info["pid"]
    down = subprocess.run([*cmd, "down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not (tmp_path / "lab" / "lab.pid").exists()
    stat = Path(f"/proc/{pid}/stat")
    assert not stat.exists() or stat.read_text().split(")")[-1].split()[0] == "Z"
    again = subprocess.run([*cmd, "down"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "no lab is running" in again.stderr
