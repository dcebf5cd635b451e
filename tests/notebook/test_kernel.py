"""Real kernels: a notebook run by nbclient, a blocked cell that keeps serving, restart cleanup.

Assertions are on ordering and success, not timings: the external client's result file must
exist when the kernel's `time.sleep(5)` returns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

ORIGIN_CELL = """\
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"kernel origin {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

origin = ThreadingHTTPServer(("127.0.0.1", 0), H)
threading.Thread(target=origin.serve_forever, daemon=True).start()
port = origin.server_address[1]
"""


def _outputs(nb: Any, index: int) -> str:
    text = []
    for out in nb.cells[index].get("outputs", []):
        if out.get("output_type") == "stream":
            text.append(out["text"])
        elif "data" in out:
            text.append(out["data"].get("text/plain", ""))
    return "".join(text)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "(Z)" not in Path(f"/proc/{pid}/stat").read_text()


def test_blocked_cell_keeps_serving_then_stop_all_frees_everything(tmp_path: Path) -> None:
    info, done = tmp_path / "tunnel.json", tmp_path / "client-done.json"
    sleeping = tmp_path / "sleeping"
    code = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(cells=[
        code("import os\nprint('KERNEL_PID', os.getpid())"),
        code(ORIGIN_CELL),
        code("%load_ext nbtunnel"),
        code("t = %tunnel {port}\n"
             "import json, urllib.request\n"
             "json.dump({'front': t.front[1], 'hostname': t.hostname}, "
             f"open({str(info)!r}, 'w'))\n"
             "req = urllib.request.Request(f'http://127.0.0.1:{t.front[1]}/first', "
             "headers={'Host': t.hostname})\n"
             "print('FIRST', urllib.request.urlopen(req, timeout=10).read().decode())"),
        code("import os, time\n"
             f"open({str(sleeping)!r}, 'w').close()\n"
             "time.sleep(5)\n"
             f"print('CLIENT_DONE_BEFORE_SLEEP_ENDED', os.path.exists({str(done)!r}))"),
        code("front_port, quic_port = t.front[1], t._connector.config.edge[0][1]\n"
             "%tunnel stop all\n"
             "import socket, threading\n"
             # SO_REUSEADDR: the edge closes `Connection: close` requests first (RFC 9112
             # 9.6), so TIME_WAIT may remain; a listener left open would still fail the bind
             "with socket.socket() as s:\n"
             "    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
             "    s.bind(('127.0.0.1', front_port))\n"
             "with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s: "
             "s.bind(('127.0.0.1', quic_port))\n"
             "print('PORTS_FREE')\n"
             "print('THREADS', [x.name for x in threading.enumerate() "
             "if x.name.startswith('nbtunnel')])"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}

    client_result: dict[str, Any] = {}

    def run_client_when_sleeping() -> None:
        deadline = time.monotonic() + 120
        while not sleeping.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        doc = json.loads(info.read_text())
        client_result["proc"] = subprocess.run(
            [sys.executable, str(HERE / "burst_client.py"), str(doc["front"]), doc["hostname"],
             "20", str(done)], capture_output=True, text=True, timeout=60)

    helper = threading.Thread(target=run_client_when_sleeping, daemon=True)
    helper.start()
    NotebookClient(nb, timeout=60, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    helper.join(60)

    kernel_pid = int(_outputs(nb, 0).split()[1])
    assert "FIRST kernel origin /first" in _outputs(nb, 3)
    assert "CLIENT_DONE_BEFORE_SLEEP_ENDED True" in _outputs(nb, 4)
    assert client_result["proc"].returncode == 0, client_result["proc"].stderr
    results = json.loads(done.read_text())
    assert [r[:2] for r in results] == [[i, 200] for i in range(20)]
    assert all(r[2] == f"kernel origin /burst/{r[0]}" for r in results)
    last = _outputs(nb, 5)
    assert "PORTS_FREE" in last and "THREADS []" in last
    deadline = time.monotonic() + 10
    while _pid_alive(kernel_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(kernel_pid)


def _run(kc: Any, code: str) -> str:
    out: list[str] = []
    reply = kc.execute_interactive(code, timeout=60, output_hook=lambda m: out.append(
        m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(out)


def test_kernel_restart_and_shutdown_leave_nothing_behind(tmp_path: Path) -> None:
    record = tmp_path / "atexit.txt"
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        # registered before nbtunnel's own atexit hook, so it runs after it (LIFO)
        _run(kc, "import atexit, os, threading\n"
                 f"atexit.register(lambda: open({str(record)!r}, 'w').write(repr("
                 "[t.name for t in threading.enumerate() if t.name.startswith('nbtunnel')])))")
        pid = int(_run(kc, "print(os.getpid())"))
        front = int(_run(kc, "%load_ext nbtunnel\nt = %tunnel hello_world\nprint(t.front[1])")
                    .strip().splitlines()[-1])
        km.restart_kernel(now=False)  # the tunnel is still open: atexit must close it
        kc.wait_for_ready(timeout=60)
        assert record.read_text() == "[]"
        assert not _pid_alive(pid)
        import socket

        with socket.socket() as s:  # SO_REUSEADDR: TIME_WAIT of closed requests is fine
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", front))
        record.unlink()
        new_pid = int(_run(kc, "import atexit, os, threading\n"
                               f"atexit.register(lambda: open({str(record)!r}, 'w').write(repr("
                               "[t.name for t in threading.enumerate() "
                               "if t.name.startswith('nbtunnel')])))\nprint(os.getpid())"))
        _run(kc, "%load_ext nbtunnel\nt = %tunnel http_status:200")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    assert not _pid_alive(new_pid)
    assert record.read_text() == "[]"  # the kernel exited through atexit, not a kill


@pytest.mark.parametrize("name", ["01-quick-tunnel.ipynb"])
def test_first_notebook_runs_top_to_bottom(name: str, tmp_path: Path) -> None:
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "store notebooks without outputs"
    NotebookClient(nb, timeout=60, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(_outputs(nb, i) for i in range(len(nb.cells)) if nb.cells[i].cell_type == "code")
    assert "Hello from my notebook! You asked for /through-the-tunnel" in text
    assert "using the embedded local edge" in text
    assert "stopped 1 tunnel(s)" in text
    widget_views = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                    if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widget_views) == 2  # shown by %tunnel, then by displaying `t`
