#!/usr/bin/env python3
"""Side by side on one edge and one origin: direct, an nginx hop, our connector and the real
cloudflared, each over QUIC and HTTP/2.

    .venv/bin/python bench/compare_bench.py [--quick] [--json out.json] [--paths ...]

One edge (``python -m nbtunnel edge``) and one origin (bench/_origin.py) serve every path; the
connectors run one after the other as quick tunnels against that edge, so every figure of a
run comes from the same machine state. For each path: small GETs at concurrency 1, 50 and
1000 (req/s, p50, p99), one download and one upload (MB/s), and the CPU time the edge and the
connector (or the nginx hop) spent per request and per MB, read from /proc. CPU per unit of
work is the figure to trust on a shared machine; req/s moves with whatever else runs.

The real cloudflared runs only when ``NBTUNNEL_CLOUDFLARED`` names its binary; nginx only when
``nginx`` is on PATH (Debian: nginx-light). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tunnel_bench import (
    HERE,
    MB,
    MIB,
    BenchError,
    CpuMeter,
    Proc,
    download,
    http_get,
    log,
    pick_loadgen,
    run_pyload,
    run_wrk,
    upload,
    version_of,
)

LOOPBACK_ENV = "NBTUNNEL_QUIC_LOOPBACK_DATAGRAM"
try:  # nbtunnel's default between loopback addresses (0: off)
    from nbtunnel.transport.quic.backend import LOOPBACK_DATAGRAM_DEFAULT as LOOPBACK_DEFAULT
except ImportError:  # an older nbtunnel (A/B runs against an export): off
    LOOPBACK_DEFAULT = 0
PATHS = ("direct", "nginx", "jupyter-proxy", "nbtunnel-quic", "nbtunnel-quic-1452",
         "nbtunnel-http2", "cloudflared-quic", "cloudflared-http2")
SMALL_DATAGRAMS = "nbtunnel-quic-1452"
"""Our connector over QUIC with the loopback datagram size off (NBTUNNEL_QUIC_LOOPBACK_DATAGRAM=0)
on edge and connector: at most 1452-byte datagrams, what a real network path (and the real
cloudflared, whose quic-go caps our edge at 1452) gets. Its small-request cells would repeat
nbtunnel-quic's (small requests never fill a datagram), so it only runs the transfers."""
TARGET_X_JUPYTER_PROXY = 4.0  # through the tunnel vs jupyter-server-proxy's hop, c=50 req/s
TARGET_CPU_US = 200  # edge + connector CPU per small request (issue 14)
TARGET_MS_PER_MB = 6.0  # per process, bulk over QUIC
TARGET_ADDED_P50_MS = 1.0  # c=1 latency the tunnel adds
TARGET_IDLE_CONN_KIB = 100.0  # the edge's RSS per idle tunnel connection


@dataclass(frozen=True)
class Plan:
    seconds: int  # per small-request cell
    conns: tuple[int, ...]
    bulk_bytes: int
    holds: int  # held-open client connections for RSS per connection (0 = skip)
    idle_conns: int  # extra idle tunnel connections for the edge's RSS per connection (0 = skip)


FULL = Plan(5, (1, 50, 1000), 100 * MB, 200, 16)
QUICK = Plan(2, (1, 50, 1000), 20 * MB, 100, 0)


@dataclass
class Hop:
    """What a path's load goes to: URL, Host header and the processes to charge CPU to."""

    name: str
    url: str
    host: str
    middle: Proc | None  # connector or nginx (None: direct)
    connections: int = 0  # tunnel connections registered at the edge


# ------------------------------------------------------------------------------- processes


def start_origin(work: Path, env: dict[str, str], procs: list[Proc]) -> tuple[Proc, str]:
    origin = Proc("origin", [sys.executable, str(HERE / "_origin.py"), "--port", "0"], work, env)
    procs.append(origin)
    port = int(origin.wait_for(r"PORT (\d+)", 15)[0].group(1))
    return origin, f"http://127.0.0.1:{port}"


@dataclass
class EdgeProc:
    proc: Proc
    udp: str  # connectors' address (UDP for QUIC, TCP for HTTP/2, same port)
    front: tuple[str, int]
    ca: Path


def nbtunnel_cmd() -> list[str]:
    return [sys.executable, "-m", "nbtunnel"]


def start_edge(work: Path, env: dict[str, str], backend: str, tag: str,
               cmd: list[str] | None = None) -> EdgeProc:
    """A fresh edge per tunnel path: same code and settings, no heap left by earlier loads
    (so its RSS per held connection is comparable between paths)."""
    state = work / f"edge-state-{tag}"
    edge = Proc("edge", [*(cmd or nbtunnel_cmd()), "edge", "--listen", "127.0.0.1:0",
                         "--http", "127.0.0.1:0", "--state-dir", str(state),
                         "--quic-backend", backend], work, env)
    udp = edge.wait_for(r"udp(?:\+tcp)? +([\d.]+):(\d+)", 20)[0]
    web = edge.wait_for(r"public front: http://([\d.]+):(\d+)", 5)[0]
    return EdgeProc(edge, f"{udp.group(1)}:{udp.group(2)}", (web.group(1), int(web.group(2))),
                    state / "ca.pem")


def start_nginx(work: Path, origin_url: str, env: dict[str, str],
                started: list[Proc]) -> tuple[Proc, str]:
    """One nginx process (no master), keep-alive to the origin: a lean native hop."""
    port = free_port()
    (work / "nginx-tmp").mkdir(exist_ok=True)
    conf = work / "nginx.conf"
    upstream = origin_url.removeprefix("http://")
    conf.write_text(f"""
worker_processes 1; master_process off; daemon off; pid {work}/nginx.pid;
error_log {work}/nginx.error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {work}/nginx-tmp; proxy_temp_path {work}/nginx-tmp;
  fastcgi_temp_path {work}/nginx-tmp; uwsgi_temp_path {work}/nginx-tmp;
  scgi_temp_path {work}/nginx-tmp;
  upstream origin {{ server {upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port}; keepalive_requests 1000000; client_max_body_size 0;
    location / {{ proxy_pass http://origin; proxy_http_version 1.1;
                 proxy_set_header Connection ""; proxy_buffering off;
                 proxy_request_buffering off; }}
  }}
}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    proc = Proc("nginx", [nginx, "-p", str(work), "-c", str(conf), "-e", "stderr"], work, env)
    started.append(proc)
    url = f"http://127.0.0.1:{port}"
    wait_serving(("127.0.0.1", port), "nginx", proc)
    return proc, url


def jupyter_proxy_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("jupyter_server_proxy") is not None


def start_jupyter_proxy(work: Path, origin_url: str, env: dict[str, str],
                        started: list[Proc]) -> tuple[Proc, str]:
    """A Jupyter server with jupyter-server-proxy (no token: loopback only), the hop a
    notebook user has without a tunnel: /proxy/PORT/ on the server's own port."""
    port = free_port()
    proc = Proc("jupyter-proxy", [
        sys.executable, "-m", "jupyter_server", "--no-browser", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--IdentityProvider.token=",
        "--ServerApp.password=", "--allow-root", f"--ServerApp.root_dir={work}",
        f"--ServerApp.runtime_dir={work / 'jupyter-runtime'}",
    ], work, env)
    started.append(proc)
    prefix = f"/proxy/{origin_url.rsplit(':', 1)[1]}"
    wait_serving(("127.0.0.1", port), f"127.0.0.1:{port}", proc, timeout=60, path=prefix + "/")
    return proc, f"http://127.0.0.1:{port}{prefix}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_serving(addr: tuple[str, int], host: str, proc: Proc, timeout: float = 15,
                 path: str = "/") -> None:
    deadline = time.monotonic() + timeout
    status: int | str = 0
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"{proc.name} exited:\n{proc.tail()}")
        try:
            status, body = http_get(addr, host, path)
            if status == 200 and body == b"hello world\n":
                return
        except OSError as exc:
            status = str(exc)
        time.sleep(0.1)
    raise BenchError(f"{proc.name}: {host} not serving (last: {status})\n{proc.tail()}")


def start_nbtunnel(work: Path, env: dict[str, str], protocol: str, backend: str, edge: EdgeProc,
                   origin_url: str, ha: int, started: list[Proc],
                   cmd: list[str] | None = None) -> Hop:
    name = f"nbtunnel-{protocol}"
    front = edge.front
    proc = Proc(name, [
        *(cmd or nbtunnel_cmd()), "tunnel", "--edge", edge.udp, "--cacert", str(edge.ca),
        "--quick-service", f"http://{front[0]}:{front[1]}", "--url", origin_url,
        "--ha-connections", str(ha), "--grace-period", "1s", "--quic-backend", backend,
        "--protocol", protocol,
    ], work, env)
    started.append(proc)
    urls = proc.wait_for(r"https?://([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)", 30)
    names = [m.group(1) for m in urls if not re.fullmatch(r"[\d.]+", m.group(1))]
    if not names:
        raise BenchError(f"no tunnel hostname in {name}'s output:\n{proc.tail()}")
    proc.wait_for(r"Registered tunnel connection", 30, which="err", count=ha)
    wait_serving(front, names[0], proc)
    return Hop(name, f"http://{front[0]}:{front[1]}/", names[0], proc, ha)


def start_cloudflared(work: Path, env: dict[str, str], binary: str, protocol: str,
                      edge: EdgeProc, origin_url: str, started: list[Proc]) -> Hop:
    name = f"cloudflared-{protocol}"
    front = edge.front
    home = work / f"home-{name}"
    home.mkdir(exist_ok=True)
    proc = Proc(name, [
        binary, "tunnel", "--no-autoupdate", "--no-prechecks", "--edge", edge.udp,
        "--cacert", str(edge.ca),
        "--quick-service", f"http://{front[0]}:{front[1]}", "--metrics", "127.0.0.1:0",
        "--protocol", protocol, "--grace-period", "1s", "--url", origin_url,
    ], work, {**env, "HOME": str(home)})
    started.append(proc)
    proc.wait_for(r"Registered tunnel connection", 30, which="err")
    banner = proc.wait_for(r"\|\s+https://([a-z0-9.-]+)\s+\|", 5, which="err")[0]
    wait_serving(front, banner.group(1), proc)
    time.sleep(2.0)  # cloudflared starts its HA connections about a second apart
    count = len(re.findall("Registered tunnel connection", proc.text("err")))
    return Hop(name, f"http://{front[0]}:{front[1]}/", banner.group(1), proc, count)


# ---------------------------------------------------------------------------------- loads


def run_cells(hop: Hop, plan: Plan, loadgen: str, meter_procs: list[Proc],
              work: Path, blob: Path) -> dict[str, Any]:
    run = run_wrk if loadgen == "wrk" else run_pyload
    out: dict[str, Any] = {"connections": hop.connections}
    meter = CpuMeter(meter_procs)
    run(hop.url, hop.host, 50, 1)  # warm-up: front connections, origin pool
    for conns in plan.conns:
        log(f"{hop.name}: GET / c={conns} for {plan.seconds}s")
        cell: dict[str, Any] = {}
        try:
            with meter.measure(cell):
                cell.update(run(hop.url, hop.host, conns, plan.seconds))
        except BenchError as exc:
            cell["error"] = str(exc).splitlines()[0]
        out[f"c{conns}"] = cell
    if plan.bulk_bytes:
        base = hop.url.rstrip("/")
        timeout = max(30.0, plan.bulk_bytes / MB)
        for kind in ("download", "upload"):
            log(f"{hop.name}: {kind} {plan.bulk_bytes // MB} MB")
            cell = {}
            try:
                with meter.measure(cell):
                    if kind == "download":
                        cell.update(download(base, hop.host, plan.bulk_bytes, timeout))
                    else:
                        cell.update(upload(base, hop.host, blob, plan.bulk_bytes, timeout,
                                           work / "sink.json"))
            except BenchError as exc:
                cell["error"] = str(exc).splitlines()[0]
            out[kind] = cell
    return out


def held_rss(hop: Hop, n: int, procs: list[Proc]) -> dict[str, Any]:
    """RSS added per held-open client connection (a /hold response trickling 1 byte/s)."""
    before = {p.name: p.rss_mib() for p in procs}
    request = f"GET /hold HTTP/1.1\r\nHost: {hop.host}\r\n\r\n".encode()
    host, port = _addr_of(hop.url)
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(request)
            socks.append(s)
        deadline = time.monotonic() + 10
        answered = 0
        for s in socks:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(OSError):
                if s.recv(4096).startswith(b"HTTP/1.1 200"):
                    answered += 1
        time.sleep(1.0)
        after = {p.name: p.rss_mib() for p in procs}
    finally:
        for s in socks:
            s.close()
    res: dict[str, Any] = {"held": n, "answered": answered}
    for p in procs:
        b, a = before[p.name], after[p.name]
        if a is not None and b is not None:
            res[p.name] = {"idle_mib": round(b, 1), "kib_per_conn": round((a - b) * 1024 / n, 1)}
    return res


def idle_conn_rss(work: Path, env: dict[str, str], proto: str, backend: str, edge: EdgeProc,
                  origin_url: str, n: int, started: list[Proc]) -> dict[str, Any]:
    """The edge's RSS per idle tunnel connection: a second connector of ours opens ``n``
    more connections (cloudflared cannot: it opens one per edge address). They start a
    second apart, as cloudflared's do, so this takes about ``n`` seconds."""
    log(f"{n} more idle {proto} connections to the edge (about {n} s)")
    time.sleep(0.5)
    before = edge.proc.rss_mib()
    extra = start_nbtunnel(work, env, proto, backend, edge, origin_url, n, started)
    time.sleep(1.0)
    after = edge.proc.rss_mib()
    assert extra.middle is not None
    out: dict[str, Any] = {"n": n, "connector_mib": extra.middle.rss_mib()}
    if before is not None and after is not None:
        out["edge_kib_per_conn"] = round((after - before) * 1024 / n, 1)
    extra.middle.stop(8.0)
    return out


def _addr_of(url: str) -> tuple[str, int]:
    m = re.match(r"http://([\d.]+):(\d+)", url)
    assert m
    return m.group(1), int(m.group(2))


# ---------------------------------------------------------------------------------- report


def _cpu(cell: dict[str, Any], name: str) -> float | None:
    return cell.get("cpu_seconds", {}).get(name)


def per_unit(cell: dict[str, Any], proc: str, unit: str) -> float | None:
    """us per request or ms per MB that `proc` spent in this cell."""
    cpu = _cpu(cell, proc)
    if cpu is None or "error" in cell:
        return None
    if unit == "req":
        return 1e6 * cpu / cell["requests"] if cell.get("requests") else None
    return 1e3 * cpu / (cell["bytes"] / MB) if cell.get("bytes") else None


def figures(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Derived figures per path: per-unit CPU of edge and middle, ratios to direct."""
    out: dict[str, dict[str, Any]] = {}
    direct = res["paths"].get("direct", {})
    for path, r in res["paths"].items():
        middle = r.get("middle")
        f: dict[str, Any] = {}
        for key, cell in r.items():
            if not isinstance(cell, dict) or ("requests" not in cell and "bytes" not in cell):
                continue
            unit = "req" if key.startswith("c") else "MB"
            edge = per_unit(cell, "edge", unit) if path.startswith(("nbtunnel", "cloudflared")) \
                else None
            mid = per_unit(cell, middle, unit) if middle else None
            f[key] = {"edge": edge, "middle": mid,
                      "both": (edge or 0) + (mid or 0) if edge is not None or mid else None}
            d = direct.get(key, {})
            if key.startswith("c") and cell.get("rps") and d.get("rps"):
                f[key]["x_direct"] = cell["rps"] / d["rps"]
                if cell.get("p50_ms") is not None and d.get("p50_ms") is not None:
                    f[key]["added_p50_ms"] = cell["p50_ms"] - d["p50_ms"]
            if key in ("download", "upload") and cell.get("mbps") and d.get("mbps"):
                f[key]["x_direct"] = cell["mbps"] / d["mbps"]
        out[path] = f
    return out


def _n(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def render(res: dict[str, Any]) -> str:
    meta = res["meta"]
    figs = res["figures"]
    lines = ["", f"nbtunnel side by side: edge {meta['backend']} {meta['backend_version']}, load "
             f"generator {meta['loadgen']}, {meta['loop']} loop, {meta['mode']} mode, "
             f"{meta['cpus']} CPUs, load average {meta['loadavg_1min_at_start']} at start",
             f"  cloudflared: {meta['cloudflared'] or 'not run (set NBTUNNEL_CLOUDFLARED)'}; "
             f"nginx: {meta['nginx'] or 'not installed'}; one edge and one origin for every path",
             "  QUIC datagrams between loopback addresses: nbtunnel-quic "
             + (f"probes up to {meta['loopback_datagram']} bytes (NOT what cloudflared or a "
                f"real network path gets)" if meta.get("loopback_datagram")
                else "1452 bytes at most, as quic-go")
             + f"; {SMALL_DATAGRAMS}: 1452 at most (cloudflared's quic-go caps our edge there "
               "too)",
             ""]
    paths = [p for p in res["paths"] if "error" not in res["paths"][p]]
    for conns in meta["conns"]:
        key = f"c{conns}"
        lines.append(f"GET / (12 bytes) c={conns}, {meta['seconds']} s per path")
        lines.append(f"{'path':<20}{'conns':>6}{'req/s':>9}{'x dir':>7}{'p50 ms':>8}{'p99 ms':>8}"
                     f"{'edge us':>9}{'hop us':>8}{'sum us':>8}{'other%':>7}  errors")
        for p in paths:
            if key not in res["paths"][p]:
                continue  # (nbtunnel-quic-1452 only runs the transfers)
            cell = res["paths"][p][key]
            f = figs[p].get(key, {})
            err = cell.get("error") or (str(cell["errors"]) if cell.get("errors") else "")
            lines.append(
                f"{p:<20}{res['paths'][p].get('connections') or '':>6}{_n(cell.get('rps')):>9}"
                f"{_n(f.get('x_direct'), 3):>7}{_n(cell.get('p50_ms'), 2):>8}"
                f"{_n(cell.get('p99_ms'), 2):>8}{_n(f.get('edge')):>9}{_n(f.get('middle')):>8}"
                f"{_n(f.get('both')):>8}{_n(cell.get('cpu_percent', {}).get('other')):>7}  {err}")
        lines.append("")
    if meta["bulk_mb"]:
        lines.append(f"bulk, {meta['bulk_mb']} MB one transfer each way (curl)")
        lines.append(f"{'path':<20}{'down MB/s':>10}{'up MB/s':>9}{'edge ms/MB':>12}"
                     f"{'hop ms/MB':>11}  (down / up)")
        for p in paths:
            r, f = res["paths"][p], figs[p]
            d, u = r.get("download", {}), r.get("upload", {})
            fd, fu = f.get("download", {}), f.get("upload", {})
            err = d.get("error") or u.get("error") or ""
            lines.append(f"{p:<20}{_n(d.get('mbps'), 1):>10}{_n(u.get('mbps'), 1):>9}"
                         f"{_n(fd.get('edge'), 1) + '/' + _n(fu.get('edge'), 1):>12}"
                         f"{_n(fd.get('middle'), 1) + '/' + _n(fu.get('middle'), 1):>11}  {err}")
        lines.append("")
    held = {p: res["paths"][p]["held"] for p in paths if "held" in res["paths"][p]}
    if held:
        lines.append("RSS: idle and per held-open client connection (KiB)")
        for p, h in held.items():
            parts = [f"{k} idle {v['idle_mib']} MiB +{v['kib_per_conn']} KiB/conn"
                     for k, v in h.items() if isinstance(v, dict)]
            lines.append(f"  {p:<18} {h['answered']}/{h['held']} answered; " + "; ".join(parts))
        lines.append("")
    idle = {p: res["paths"][p]["idle_conns"] for p in paths if "idle_conns" in res["paths"][p]}
    if idle:
        lines.append(f"RSS of the edge per idle tunnel connection (target <= "
                     f"{TARGET_IDLE_CONN_KIB:g} KiB)")
        for p, d in idle.items():
            kib = d.get("edge_kib_per_conn")
            verdict = "" if kib is None else "ok" if kib <= TARGET_IDLE_CONN_KIB else "MISS"
            lines.append(f"  {p:<18} {d['n']} connections: {_n(kib, 1)} KiB each  {verdict}")
        lines.append("")
    lines += ratio_lines(res)
    for p, r in res["paths"].items():
        if "error" in r:
            lines.append(f"path {p} failed: {r['error']}")
    return "\n".join(lines)


def ratio_lines(res: dict[str, Any]) -> list[str]:
    figs, paths = res["figures"], res["paths"]
    lines = ["nbtunnel connector vs the real cloudflared on the same edge (ratio >= 1: ours is "
             "as fast / as cheap), and the issue-14 targets"]
    for proto in ("quic", "http2"):
        ours, theirs = f"nbtunnel-{proto}", f"cloudflared-{proto}"
        if ours not in figs:
            if proto != "quic" or SMALL_DATAGRAMS not in figs:
                continue
            ours = SMALL_DATAGRAMS  # (only transfers)
        o, t = paths[ours], paths.get(theirs, {})
        fo, ft = figs[ours], figs.get(theirs, {})
        c50 = o.get("c50", {}).get("rps"), t.get("c50", {}).get("rps")
        parts = [f"c=50 req/s {_n(c50[0])}"]
        if c50[1]:
            parts.append(f"vs {_n(c50[1])} = {c50[0] / c50[1]:.2f}x" if c50[0] else "")
        jsp = paths.get("jupyter-proxy", {}).get("c50", {}).get("rps")
        if jsp and c50[0]:
            x = c50[0] / jsp
            parts.append(f"{x:.1f}x jupyter-server-proxy (target >= {TARGET_X_JUPYTER_PROXY:g}: "
                         f"{'ok' if x >= TARGET_X_JUPYTER_PROXY else 'MISS'})")
        both = fo.get("c50", {}).get("both")
        parts.append(f"edge+conn {_n(both)} us/req (target <= {TARGET_CPU_US}: "
                     f"{'ok' if both is not None and both <= TARGET_CPU_US else 'MISS'})")
        mid_t = ft.get("c50", {}).get("middle")
        if mid_t and fo.get("c50", {}).get("middle"):
            parts.append(f"connector CPU cloudflared/ours {mid_t / fo['c50']['middle']:.2f}")
        added = fo.get("c1", {}).get("added_p50_ms")
        if added is not None:
            parts.append(f"c=1 adds {added:.2f} ms p50 (target <= {TARGET_ADDED_P50_MS}: "
                         f"{'ok' if added <= TARGET_ADDED_P50_MS else 'MISS'})")
        if "c50" in o or "c1" in o:
            lines.append(f"  {proto:<5} " + "; ".join(p for p in parts if p))
        if proto != "quic":
            continue
        for name in (f"nbtunnel-{proto}", SMALL_DATAGRAMS):
            if "download" not in figs.get(name, {}):
                continue
            fo, o = figs[name], paths[name]
            worst = max((x for k in ("download", "upload") for x in
                         (fo.get(k, {}).get("edge"), fo.get(k, {}).get("middle"))
                         if x is not None), default=None)
            bulk = [f"worst process {_n(worst, 1)} ms/MB (target <= {TARGET_MS_PER_MB}: "
                    f"{'ok' if worst is not None and worst <= TARGET_MS_PER_MB else 'MISS'})"]
            for k in ("download", "upload"):
                a, b = o.get(k, {}).get("mbps"), t.get(k, {}).get("mbps")
                if a and b:
                    bulk.append(f"{k} {a / b:.2f}x cloudflared")
            label = ("bulk, loopback datagrams" if name == f"nbtunnel-{proto}"
                     and res["meta"].get("loopback_datagram") else
                     "bulk, 1452-byte datagrams" if name == SMALL_DATAGRAMS else "bulk")
            lines.append(f"        {label}: " + "; ".join(bulk))
    lines.append("")
    return lines


# ------------------------------------------------------------------------------------ main


def uvloop_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


def run_path(path: str, r: dict[str, Any], plan: Plan, args: argparse.Namespace, work: Path,
             env: dict[str, str], origin: Proc, origin_url: str, blob: Path, cloudflared: str,
             loadgen: str, started: list[Proc]) -> None:
    """Start what `path` needs (into `started`, stopped by the caller) and run its cells."""
    procs = [origin]
    if path == "direct":
        hop = Hop(path, origin_url + "/", "origin", None)
    elif path == "nginx":
        nginx, url = start_nginx(work, origin_url, env, started)
        hop = Hop(path, url + "/", "origin", nginx)
        procs.append(nginx)
    elif path == "jupyter-proxy":
        jupyter, url = start_jupyter_proxy(work, origin_url, env, started)
        hop = Hop(path, url + "/", url.split("/")[2], jupyter)
        procs.append(jupyter)
    else:
        if path == SMALL_DATAGRAMS:
            env = {**env, LOOPBACK_ENV: "0"}
            plan = Plan(plan.seconds, (), plan.bulk_bytes, 0, 0)  # only the transfers
        edge = start_edge(work, env, args.quic_backend, path)
        started.append(edge.proc)
        procs.append(edge.proc)
        proto = path.split("-")[1]
        if path.startswith("nbtunnel"):
            hop = start_nbtunnel(work, env, proto, args.quic_backend, edge, origin_url, args.ha,
                                 started)
        else:
            hop = start_cloudflared(work, env, cloudflared, proto, edge, origin_url, started)
        assert hop.middle is not None
        procs.append(hop.middle)
        if plan.idle_conns and path.startswith("nbtunnel"):  # first: a heap no load grew
            r["idle_conns"] = idle_conn_rss(work, env, proto, args.quic_backend, edge,
                                            origin_url, plan.idle_conns, started)
        if plan.holds:
            log(f"{path}: {plan.holds} held-open connections")
            r["held"] = held_rss(hop, plan.holds, procs[1:])
    r["middle"] = hop.middle.name if hop.middle else None
    r.update(run_cells(hop, plan, loadgen, procs, work, blob))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s cells, 20 MB transfers")
    parser.add_argument("--seconds", type=int, help="seconds per small-request cell")
    parser.add_argument("--conns", help="comma-separated concurrencies (default 1,50,1000)")
    parser.add_argument("--bulk-mb", type=int, help="MB per transfer (0: no transfers)")
    parser.add_argument("--holds", type=int, help="held-open connections for RSS (0: skip)")
    parser.add_argument("--idle-conns", type=int,
                        help="extra idle tunnel connections for the edge's RSS per connection "
                             "(16; 0 with --quick: they start 1 s apart)")
    parser.add_argument("--paths", default=",".join(PATHS),
                        help=f"comma-separated subset of {','.join(PATHS)}")
    parser.add_argument("--ha", type=int, default=1,
                        help="our connector's HA connections (1: what cloudflared opens to one "
                             "edge address; the edge picks the least busy connection, so at "
                             "c=1 it reuses one and under load it spreads over all)")
    parser.add_argument("--quic-backend", choices=["qh3", "aioquic"], default="qh3")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--loop", choices=["auto", "asyncio"], default="auto",
                        help="event loop of edge and connector (auto: uvloop when installed)")
    parser.add_argument("--loopback-datagram", type=int, default=None, metavar="BYTES",
                        help="QUIC datagram size nbtunnel-quic's edge and connector probe for "
                             "between loopback addresses (NBTUNNEL_QUIC_LOOPBACK_DATAGRAM; "
                             f"default: nbtunnel's, {LOOPBACK_DEFAULT or 'off'}; 0: off, 1452 "
                             f"at most like quic-go). {SMALL_DATAGRAMS} always runs with 0; "
                             "cloudflared's connector caps the edge at 1452 either way")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    plan = Plan(args.seconds or base.seconds,
                tuple(int(c) for c in args.conns.split(",")) if args.conns else base.conns,
                (args.bulk_mb if args.bulk_mb is not None else base.bulk_bytes // MB) * MB,
                args.holds if args.holds is not None else base.holds,
                args.idle_conns if args.idle_conns is not None else base.idle_conns)
    wanted = [p for p in args.paths.split(",") if p]
    unknown = set(wanted) - set(PATHS)
    if unknown:
        parser.error(f"unknown paths: {', '.join(sorted(unknown))}")
    cloudflared = os.environ.get("NBTUNNEL_CLOUDFLARED") or ""
    skipped = []
    if not cloudflared:
        skipped += [p for p in wanted if p.startswith("cloudflared")]
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        skipped += [p for p in wanted if p == "nginx"]
    if not jupyter_proxy_installed():
        skipped += [p for p in wanted if p == "jupyter-proxy"]
    wanted = [p for p in wanted if p not in skipped]
    if skipped:
        log(f"skipping {', '.join(skipped)} (cloudflared: set NBTUNNEL_CLOUDFLARED; nginx: "
            f"apt-get install nginx-light; jupyter-proxy: pip install jupyter-server-proxy)")
    if plan.bulk_bytes and not shutil.which("curl"):
        raise SystemExit("curl is needed for the transfers (or --bulk-mb 0)")
    loadgen = pick_loadgen(args.loadgen)
    cf_version = ""
    if cloudflared:
        cf_version = subprocess.run([cloudflared, "--version"], capture_output=True, text=True,
                                    check=False).stdout.strip()
    res: dict[str, Any] = {"meta": {
        "backend": args.quic_backend, "backend_version": version_of(args.quic_backend),
        "nbtunnel": version_of("nbtunnel"), "cpus": os.cpu_count(), "loadgen": loadgen,
        "loadavg_1min_at_start": round(os.getloadavg()[0], 2),
        "mode": "quick" if args.quick else "full", "seconds": plan.seconds,
        "conns": list(plan.conns), "bulk_mb": plan.bulk_bytes // MB, "holds": plan.holds,
        "idle_conns": plan.idle_conns,
        "cloudflared": cf_version, "nginx": bool(shutil.which("nginx")
                                                 or Path("/usr/sbin/nginx").exists()),
        "skipped": skipped, "ha_ours": args.ha,
        "loopback_datagram": (LOOPBACK_DEFAULT if args.loopback_datagram is None
                              else args.loopback_datagram),
        "loop": "asyncio" if args.loop == "asyncio" or not uvloop_installed() else "uvloop",
    }, "paths": {}}

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    work = Path(tempfile.mkdtemp(prefix="nbtunnel-compare-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBTUNNEL_")}
    env["NBTUNNEL_HOME"] = str(work / "home")
    env["PYTHONUNBUFFERED"] = "1"
    if args.loop == "asyncio":
        env["NBTUNNEL_LOOP"] = "asyncio"
    if args.loopback_datagram is not None:
        env[LOOPBACK_ENV] = str(args.loopback_datagram)
    procs: list[Proc] = []
    ok = False
    try:
        origin, origin_url = start_origin(work, env, procs)
        blob = work / "upload.bin"
        if plan.bulk_bytes:
            with blob.open("wb") as f:
                block = os.urandom(MIB)
                for _ in range(plan.bulk_bytes // MIB):
                    f.write(block)
                f.write(block[: plan.bulk_bytes % MIB])
        for path in wanted:
            r: dict[str, Any] = {}
            res["paths"][path] = r
            started: list[Proc] = []
            try:
                run_path(path, r, plan, args, work, env, origin, origin_url, blob, cloudflared,
                         loadgen, started)
            except BenchError as exc:
                log(f"{path} failed: {exc}")
                r["error"] = str(exc).splitlines()[0]
            finally:
                for proc in reversed(started):
                    proc.stop(8.0)
                    proc.kill()
        ok = True
    except KeyboardInterrupt:
        log("interrupted")
    except BenchError as exc:
        log(f"setup failed: {exc}")
    finally:
        for proc in reversed(procs):
            proc.stop(5.0)
        for proc in procs:
            proc.kill()
        if args.keep_logs or not ok:
            log(f"process output kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    res["figures"] = figures(res)
    print(render(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
        log(f"results written to {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
