#!/usr/bin/env python3
"""Benchmark nbtunnel end to end on loopback: direct-to-origin vs through edge + connector.

    .venv/bin/python bench/tunnel_bench.py [--quick] [--quic-backend qh3|aioquic] [--json out.json]

Starts three processes of its own (an aiohttp origin, ``python -m nbtunnel edge`` and
``python -m nbtunnel tunnel``) with free ports and a temporary NBTUNNEL_HOME, then measures:

1. small GETs at concurrency 1 and 50 (wrk when installed, else bench/_loadgen.py): req/s,
   p50 and p99 latency, direct and through the tunnel;
2. one download and one upload of 200 MB (50 MB with --quick) with curl, direct and tunnel;
3. RSS of the edge and the connector: idle with 4 HA connections, with 200 held-open
   responses, and while a large response drains to a client reading at 1 MiB/s;
4. whether the tunnel lets go of requests whose client went away (seen from the origin).

Every load is bounded in count and time; every process is stopped at the end (SIGTERM, then
SIGKILL). See bench/README.md for how to read the output.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.metadata
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TICKS = os.sysconf("SC_CLK_TCK")
MB = 1_000_000
MIB = 1 << 20


@dataclass(frozen=True)
class Plan:
    rps_seconds: int  # each of the four small-request runs
    transfer_bytes: int  # one download and one upload, direct and tunnel
    holds: int  # concurrent held-open responses
    hold_wait: float  # max seconds for them to be answered
    drain_seconds: int  # slow client at 1 MiB/s
    release_wait: float  # max seconds for the origin to see an abandoned request end
    transfer_timeout: float  # curl --max-time per transfer


FULL = Plan(5, 200 * MB, 200, 10.0, 15, 5.0, 40.0)
QUICK = Plan(2, 50 * MB, 200, 5.0, 6, 3.0, 20.0)

TARGET_RPS_C50 = 2000
TARGET_MBPS = {"qh3": 60, "aioquic": 20}
TARGET_RSS_GROWTH_MB = 8  # "a few MB", independent of the response size
SILENT_HOLDS = 10  # held responses with no data flowing: is the client's leaving noticed?
NOISY_OTHER_PERCENT = 25  # CPU used by unrelated processes that makes a run suspect


class BenchError(Exception):
    pass


T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- processes


class Proc:
    """A child process with stdout/stderr in files, RSS and CPU from /proc, stop by PID."""

    def __init__(self, name: str, argv: list[str], workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.out_path = workdir / f"{name}.stdout"
        self.err_path = workdir / f"{name}.stderr"
        self._files = [self.out_path.open("wb"), self.err_path.open("wb")]
        self.popen = subprocess.Popen(
            argv, stdout=self._files[0], stderr=self._files[1], stdin=subprocess.DEVNULL,
            cwd=workdir, env=env, start_new_session=True,  # our Ctrl-C is handled by us
        )
        self.pid = self.popen.pid
        self.stop_seconds: float | None = None

    def text(self, which: str = "out") -> str:
        path = self.out_path if which == "out" else self.err_path
        return path.read_text(errors="replace")

    def tail(self, n: int = 15) -> str:
        lines = (self.text("out") + self.text("err")).splitlines()
        return "\n".join(f"    {self.name}| {line}" for line in lines[-n:])

    def wait_for(self, pattern: str, timeout: float, which: str = "out",
                 count: int = 1) -> list[re.Match[str]]:
        deadline = time.monotonic() + timeout
        while True:
            found = list(re.finditer(pattern, self.text(which)))
            if len(found) >= count:
                return found
            if self.popen.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.popen.returncode}:\n"
                                 f"{self.tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: no {pattern!r} x{count} within {timeout}s:\n"
                                 f"{self.tail()}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def rss_mib(self) -> float | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        m = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        return int(m.group(1)) / 1024 if m else None

    def cpu_seconds(self) -> float:
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime

    def stop(self, timeout: float) -> None:
        """SIGTERM, wait up to `timeout`, then SIGKILL; records how long the stop took."""
        if self.alive():
            t0 = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
                self.stop_seconds = time.monotonic() - t0
            except subprocess.TimeoutExpired:
                self.kill()
        for f in self._files:
            f.close()

    def kill(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine spent busy (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / TICKS


class CpuMeter:
    """CPU used over one run by the tunnel's processes, by finished client children (wrk,
    curl), by this script, and by everything else on the machine ("other": noise)."""

    def __init__(self, procs: list[Proc]) -> None:
        self.procs = procs

    @staticmethod
    def _ours() -> tuple[float, float]:
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        return kids.ru_utime + kids.ru_stime, me.ru_utime + me.ru_stime

    @contextlib.contextmanager
    def measure(self, into: dict[str, Any]) -> Iterator[None]:
        before = {p.name: p.cpu_seconds() for p in self.procs}
        kids, me = self._ours()
        busy = machine_busy_seconds()
        t0 = time.monotonic()
        yield
        wall = time.monotonic() - t0
        busy = machine_busy_seconds() - busy
        kids2, me2 = self._ours()
        cpu = {p.name: p.cpu_seconds() - before[p.name] for p in self.procs}
        cpu["client"] = kids2 - kids
        cpu["other"] = max(0.0, busy - sum(cpu.values()) - (me2 - me))
        into["cpu_seconds"] = {k: round(v, 3) for k, v in cpu.items()}
        into["cpu_percent"] = {k: round(100 * v / wall, 1) for k, v in cpu.items()}
        into["wall_seconds"] = round(wall, 3)


# ---------------------------------------------------------------------------------- HTTP bits


def http_get(addr: tuple[str, int], host: str, path: str,
             timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class Origin:
    def __init__(self, proc: Proc, port: int) -> None:
        self.proc = proc
        self.addr = ("127.0.0.1", port)
        self.url = f"http://127.0.0.1:{port}"

    def stats(self) -> dict[str, int]:
        status, body = http_get(self.addr, "origin", "/stats", timeout=5)
        if status != 200:
            raise BenchError(f"origin /stats answered {status}")
        return json.loads(body)

    def wait_gauge(self, key: str, target: int, timeout: float) -> float | None:
        """Seconds until stats[key] <= target, or None if it did not happen in time."""
        t0 = time.monotonic()
        while True:
            if self.stats()[key] <= target:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                return None
            time.sleep(0.1)


# ---------------------------------------------------------------------------- load generators


def _wrk_ms(text: str, pct: str) -> float | None:
    m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        return None
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def run_wrk(url: str, host: str, conns: int, seconds: int) -> dict[str, Any]:
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "5s",
            "-H", f"Host: {host}", url]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                          check=False)
    out = proc.stdout
    m_rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    m_n = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if proc.returncode != 0 or not m_rps or not m_n:
        raise BenchError(f"wrk failed ({proc.returncode}): {out}{proc.stderr}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (
        sum(int(g) for g in sock.groups()) if sock else 0)
    return {"rps": float(m_rps.group(1)), "requests": int(m_n.group(1)), "errors": errors,
            "p50_ms": _wrk_ms(out, "50"), "p99_ms": _wrk_ms(out, "99")}


def run_pyload(url: str, host: str, conns: int, seconds: int) -> dict[str, Any]:
    argv = [sys.executable, str(HERE / "_loadgen.py"), "--url", url, "--host", host,
            "-c", str(conns), "-d", str(seconds)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                          check=False)
    if proc.returncode != 0:
        raise BenchError(f"_loadgen.py failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


# -------------------------------------------------------------------------------- transfers


def _curl(argv: list[str], timeout: float) -> list[str]:
    proc = subprocess.run(["curl", "-sS", "--max-time", str(int(timeout)), *argv],
                          capture_output=True, text=True, timeout=timeout + 10, check=False)
    if proc.returncode != 0:
        raise BenchError(f"curl exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout.split()


def download(base: str, host: str, size: int, timeout: float) -> dict[str, Any]:
    code, got, secs = _curl(["-o", "/dev/null", "-H", f"Host: {host}",
                             "-w", "%{http_code} %{size_download} %{time_total}",
                             f"{base}/bytes/{size}"], timeout)
    if code != "200" or int(got) != size:
        raise BenchError(f"download: status {code}, {got} of {size} bytes")
    return {"mbps": size / float(secs) / MB, "seconds": float(secs), "bytes": size}


def upload(base: str, host: str, path: Path, size: int, timeout: float,
           body_path: Path) -> dict[str, Any]:
    code, sent, secs = _curl(
        ["-X", "POST", "-T", str(path), "-o", str(body_path), "-H", f"Host: {host}",
         "-H", "Expect:", "-H", "Content-Type: application/octet-stream",
         "-w", "%{http_code} %{size_upload} %{time_total}", f"{base}/sink"], timeout)
    seen = json.loads(body_path.read_text()).get("bytes") if code == "200" else None
    if code != "200" or int(sent) != size or seen != size:
        raise BenchError(f"upload: status {code}, sent {sent}, origin counted {seen} of {size}")
    return {"mbps": size / float(secs) / MB, "seconds": float(secs), "bytes": size}


# ------------------------------------------------------------------------------------ setup


@dataclass
class Setup:
    origin: Origin
    edge: Proc
    connector: Proc
    front: tuple[str, int]
    hostname: str

    @property
    def tunnel_url(self) -> str:
        return f"http://{self.front[0]}:{self.front[1]}"


def nbtunnel_argv(use_uvloop: bool) -> list[str]:
    if not use_uvloop:
        return [sys.executable, "-m", "nbtunnel"]
    code = ("import sys, uvloop; uvloop.install(); from nbtunnel.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    return [sys.executable, "-c", code]


def start_all(work: Path, backend: str, use_uvloop: bool, procs: list[Proc],
              extra_env: dict[str, str] | None = None) -> Setup:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBTUNNEL_")}
    env.update(extra_env or {})
    env["NBTUNNEL_HOME"] = str(work / "home")
    env["PYTHONUNBUFFERED"] = "1"
    origin_argv = [sys.executable, str(HERE / "_origin.py"), "--port", "0"]
    procs.append(Proc("origin", origin_argv, work, env))
    port = int(procs[-1].wait_for(r"PORT (\d+)", 15)[0].group(1))
    origin = Origin(procs[-1], port)

    state = work / "edge-state"
    nbt = nbtunnel_argv(use_uvloop)
    edge = Proc("edge", [*nbt, "edge", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
                         "--state-dir", str(state), "--quic-backend", backend], work, env)
    procs.append(edge)
    udp = edge.wait_for(r"udp(?:\+tcp)? +([\d.]+):(\d+)", 20)[0]
    web = edge.wait_for(r"public front: http://([\d.]+):(\d+)", 5)[0]
    front = (web.group(1), int(web.group(2)))
    ca = state / "ca.pem"
    if not ca.exists():
        raise BenchError(f"edge CA not found at {ca}")

    connector = Proc("connector", [
        *nbt, "tunnel", "--edge", f"{udp.group(1)}:{udp.group(2)}", "--cacert", str(ca),
        "--quick-service", f"http://{front[0]}:{front[1]}", "--url", origin.url,
        "--ha-connections", "4", "--grace-period", "1s", "--quic-backend", backend,
    ], work, env)
    procs.append(connector)
    urls = connector.wait_for(r"https?://([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)", 20)
    names = [m.group(1) for m in urls if not re.fullmatch(r"[\d.]+", m.group(1))]
    if not names:
        raise BenchError(f"no tunnel hostname in the connector's output:\n{connector.tail()}")
    hostname = names[0]
    connector.wait_for(r"Registered tunnel connection", 20, which="err", count=4)
    deadline = time.monotonic() + 10
    while True:
        try:
            status, body = http_get(front, hostname, "/")
            if status == 200 and body == b"hello world\n":
                break
        except OSError:
            status = 0
        if time.monotonic() > deadline:
            raise BenchError(f"tunnel not serving (last status {status})")
        time.sleep(0.1)
    return Setup(origin, edge, connector, front, hostname)


# ----------------------------------------------------------------------------------- phases


def phase_rps(s: Setup, plan: Plan, loadgen: str, cpu: CpuMeter, res: dict[str, Any]) -> None:
    run = run_wrk if loadgen == "wrk" else run_pyload
    secs = plan.rps_seconds
    run(s.tunnel_url + "/", s.hostname, 50, 1)  # warm-up: front connections, origin pool
    for conns in (1, 50):
        for where, url in (("direct", s.origin.url + "/"), ("tunnel", s.tunnel_url + "/")):
            log(f"GET / c={conns} {where} for {secs}s")
            out: dict[str, Any] = {}
            with cpu.measure(out):
                out.update(run(url, s.hostname, conns, secs))
            res[f"get_c{conns}"][where] = out


def phase_transfers(s: Setup, plan: Plan, work: Path, cpu: CpuMeter,
                    res: dict[str, Any]) -> None:
    size = plan.transfer_bytes
    blob = work / "upload.bin"
    with blob.open("wb") as f:
        block = os.urandom(MIB)
        for _ in range(size // MIB):
            f.write(block)
        f.write(block[: size % MIB])
    for where, base in (("direct", s.origin.url), ("tunnel", s.tunnel_url)):
        log(f"download {size // MB} MB {where}")
        out: dict[str, Any] = {}
        with cpu.measure(out):
            out.update(download(base, s.hostname, size, plan.transfer_timeout))
        res["download"][where] = out
        log(f"upload {size // MB} MB {where}")
        out = {}
        with cpu.measure(out):
            out.update(upload(base, s.hostname, blob, size, plan.transfer_timeout,
                              work / "sink.json"))
        res["upload"][where] = out
    blob.unlink()


def sample_rss(s: Setup) -> dict[str, float | None]:
    return {"edge": s.edge.rss_mib(), "connector": s.connector.rss_mib()}


def phase_slow_drain(s: Setup, plan: Plan, res: dict[str, Any]) -> None:
    size = 200 * MB  # always large: RSS must not follow the response size
    secs = plan.drain_seconds
    log(f"slow client: {size // MB} MB response read at 1 MiB/s for {secs}s")
    base_open = s.origin.stats()["bytes_open"]
    start = sample_rss(s)
    client = subprocess.Popen(
        ["curl", "-sS", "-o", "/dev/null", "--limit-rate", "1M", "--max-time", str(secs + 10),
         "-H", f"Host: {s.hostname}", f"{s.tunnel_url}/bytes/{size}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    samples = []
    try:
        t0 = time.monotonic()
        for i in range(1, secs + 1):
            time.sleep(max(0.0, t0 + i - time.monotonic()))
            samples.append({"t": i, **sample_rss(s)})
    finally:
        client.terminate()
        try:
            client.wait(5)
        except subprocess.TimeoutExpired:
            client.kill()
            client.wait(5)
    out: dict[str, Any] = {"seconds": secs, "response_bytes": size, "samples": samples}
    for name in ("edge", "connector"):
        values = [x[name] for x in samples if x[name] is not None]
        first = start[name]
        if values and first is not None:
            out[name] = {"start": first, "max": max(values), "growth": max(values) - first}
    log("slow client stopped; waiting for the origin to see the response abandoned")
    out["release_seconds"] = s.origin.wait_gauge("bytes_open", base_open, plan.release_wait)
    out["release_wait"] = plan.release_wait
    res["slow_drain"] = out


def open_holds(s: Setup, n: int, path: str, wait: float,
               base: int) -> tuple[list[socket.socket], int, int]:
    """Open `n` client connections asking for `path`; wait until they are answered (or no
    progress for 2 s, or `wait`). Returns the sockets, how many were answered, and how many
    requests reached the origin."""
    request = f"GET {path} HTTP/1.1\r\nHost: {s.hostname}\r\n\r\n".encode()
    socks: list[socket.socket] = []
    answered: set[int] = set()
    try:
        for _ in range(n):
            sock = socket.create_connection(s.front, timeout=5)
            socks.append(sock)
            sock.sendall(request)
            sock.setblocking(False)
        t0 = time.monotonic()
        last_change, last = t0, (-1, -1)
        while True:
            for i, sock in enumerate(socks):
                if i not in answered:
                    with contextlib.suppress(BlockingIOError):
                        if sock.recv(4096).startswith(b"HTTP/1.1 200"):
                            answered.add(i)
            at_origin = s.origin.stats()["holds"] - base
            now = time.monotonic()
            if (len(answered), at_origin) != last:
                last, last_change = (len(answered), at_origin), now
            if (len(answered) >= n and at_origin >= n) or now - last_change > 2.0 \
                    or now - t0 > wait:
                return socks, len(answered), at_origin
            time.sleep(0.25)
    except BaseException:
        for sock in socks:
            sock.close()
        raise


def phase_holds(s: Setup, plan: Plan, res: dict[str, Any]) -> None:
    n = plan.holds
    log(f"{n} held-open responses through the tunnel (origin writes 1 byte/s)")
    base = s.origin.stats()["holds"]
    out: dict[str, Any] = {"requested": n}
    res["holds"] = out
    socks, out["answered"], out["at_origin"] = open_holds(s, n, "/hold", plan.hold_wait, base)
    try:
        time.sleep(0.5)
        out["rss"] = sample_rss(s)
    finally:
        for sock in socks:
            sock.close()
    log("held clients closed; waiting for the origin to see them gone")
    out["release_seconds"] = s.origin.wait_gauge("holds", base, plan.release_wait)
    out["still_open_at_origin"] = s.origin.stats()["holds"] - base
    out["release_wait"] = plan.release_wait



def phase_silent(s: Setup, plan: Plan, res: dict[str, Any]) -> None:
    k = SILENT_HOLDS
    log(f"{k} silent held-open responses (origin writes nothing after the head)")
    base = s.origin.stats()["holds"]
    silent: dict[str, Any] = {"requested": k}
    res["silent"] = silent
    socks, silent["answered"], silent["at_origin"] = open_holds(
        s, k, "/hold?beat=0", plan.hold_wait, base)
    for sock in socks:
        sock.close()
    silent["release_seconds"] = s.origin.wait_gauge("holds", base, plan.release_wait)
    silent["still_open_at_origin"] = s.origin.stats()["holds"] - base
    silent["release_wait"] = plan.release_wait


def phase_after(s: Setup, res: dict[str, Any]) -> None:
    """Does the tunnel still answer once all those clients went away?"""
    t0 = time.monotonic()
    try:
        status, _ = http_get(s.front, s.hostname, "/", timeout=5)
        res["tunnel_after"] = {"status": status, "ms": 1000 * (time.monotonic() - t0)}
    except OSError as exc:
        res["tunnel_after"] = {"status": None, "error": str(exc) or type(exc).__name__}


# ---------------------------------------------------------------------------------- report


def _num(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}"


def _ratio(d: float | None, t: float | None) -> str:
    return f"{t / d:.3f}" if d and t is not None else "-"


def render(res: dict[str, Any]) -> str:
    meta = res["meta"]
    backend = meta["backend"]
    lines = [
        "",
        f"nbtunnel benchmark: backend {backend} {meta['backend_version']}, "
        f"{'uvloop' if meta['uvloop'] else 'asyncio'} event loop, load generator "
        f"{meta['loadgen']}, {meta['mode']} mode",
        f"  nbtunnel {meta['nbtunnel']}, Python {meta['python']}, {meta['cpus']} CPUs "
        f"(load average {meta['loadavg_1min_at_start']} at start), loopback; edge, connector, "
        f"origin and client are separate processes",
        "",
    ]
    w = (34, 11, 11, 9, 22)
    head = ("metric", "direct", "tunnel", "t/d", "target")
    lines.append("".join(h.ljust(w[0]) if i == 0 else h.rjust(w[i]) if i < 4 else
                         "  " + h for i, h in enumerate(head)))
    lines.append("-" * (sum(w) + 2))
    mbps_target = TARGET_MBPS[backend]

    def row(name: str, d: float | None, t: float | None, digits: int = 1,
            target: str = "", ok: bool | None = None) -> None:
        verdict = "" if ok is None else ("  ok" if ok else "  MISS")
        lines.append(f"{name:<{w[0]}}{_num(d, digits):>{w[1]}}{_num(t, digits):>{w[2]}}"
                     f"{_ratio(d, t):>{w[3]}}  {target}{verdict}")

    errors = []
    for conns in (1, 50):
        r = res[f"get_c{conns}"]
        d, t = r.get("direct", {}), r.get("tunnel", {})
        target = f">= {TARGET_RPS_C50:,} req/s" if conns == 50 else ""
        ok = (t["rps"] >= TARGET_RPS_C50) if conns == 50 and "rps" in t else None
        row(f"GET / c={conns}  req/s", d.get("rps"), t.get("rps"), 0, target, ok)
        row(f"GET / c={conns}  p50 latency ms", d.get("p50_ms"), t.get("p50_ms"), 2)
        row(f"GET / c={conns}  p99 latency ms", d.get("p99_ms"), t.get("p99_ms"), 2)
        for where, x in (("direct", d), ("tunnel", t)):
            if x.get("errors"):
                errors.append(f"GET / c={conns} {where}: {x['errors']} errors/non-2xx")
    size = res["meta"]["transfer_mb"]
    for kind in ("download", "upload"):
        d, t = res[kind].get("direct", {}), res[kind].get("tunnel", {})
        ok = (t["mbps"] >= mbps_target) if "mbps" in t else None
        row(f"{kind} {size} MB  MB/s", d.get("mbps"), t.get("mbps"), 1,
            f">= {mbps_target} MB/s ({backend})", ok)

    lines += ["", "CPU during each run (% of one core, 200% = the whole machine); client = "
              "wrk/curl/loadgen, other = unrelated processes (noise)",
              f"{'run':<22}{'edge':>7}{'conn':>7}{'origin':>7}{'client':>7}{'other':>7}"
              f"{'edge+conn CPU':>16}"]
    noisy = []
    for key, label, unit in (("get_c1", "GET / c=1", "req"), ("get_c50", "GET / c=50", "req"),
                             ("download", "download", "MB"), ("upload", "upload", "MB")):
        for where in ("direct", "tunnel"):
            t = res[key].get(where)
            if not t or "cpu_percent" not in t:
                continue
            pct, cs = t["cpu_percent"], t["cpu_seconds"]
            both = cs["edge"] + cs["connector"]
            per = ""
            if where == "tunnel" and unit == "req" and t.get("requests"):
                per = f"{1e6 * both / t['requests']:.0f} us/req"
            elif where == "tunnel" and unit == "MB":
                per = f"{1000 * both / (t['bytes'] / MB):.1f} ms/MB"
            lines.append(f"{label + ' ' + where:<22}{pct['edge']:>6.0f}%{pct['connector']:>6.0f}%"
                         f"{pct['origin']:>6.0f}%{pct['client']:>6.0f}%{pct['other']:>6.0f}%"
                         f"{per:>16}")
            if pct["other"] > NOISY_OTHER_PERCENT:
                noisy.append(f"{label} {where}")
    if noisy:
        lines.append(f"  WARNING: other processes used > {NOISY_OTHER_PERCENT}% of a core during: "
                     + ", ".join(noisy) + "; those figures are disturbed (rerun on a quiet "
                     "machine)")

    lines += ["", "RSS of the tunnel processes (MiB, VmRSS)",
              f"{'state':<44}{'edge':>9}{'connector':>11}  target"]

    def rss_row(name: str, e: float | None, c: float | None, target: str = "",
                ok: bool | None = None) -> None:
        verdict = "" if ok is None else ("  ok" if ok else "  MISS")
        lines.append(f"{name:<44}{_num(e):>9}{_num(c):>11}  {target}{verdict}")

    rss = res.get("rss", {})
    if "idle" in rss:
        rss_row("idle, 4 HA connections", rss["idle"]["edge"], rss["idle"]["connector"])
    if "after_load" in rss:
        rss_row("idle again after the loads above", rss["after_load"]["edge"],
                rss["after_load"]["connector"])
    holds = res.get("holds", {})
    if "rss" in holds:
        rss_row(f"{holds['requested']} held-open responses", holds["rss"]["edge"],
                holds["rss"]["connector"])
    drain = res.get("slow_drain", {})
    if "edge" in drain and "connector" in drain:
        e, c = drain["edge"], drain["connector"]
        label = f"slow client 1 MiB/s, {drain['response_bytes'] // MB} MB response"
        rss_row(f"{label}: start", e["start"], c["start"])
        rss_row(f"  max over {drain['seconds']} s", e["max"], c["max"])
        grow_ok = max(e["growth"], c["growth"]) * MIB / MB <= TARGET_RSS_GROWTH_MB
        rss_row("  growth", e["growth"], c["growth"], f"<= {TARGET_RSS_GROWTH_MB} MB each",
                grow_ok)

    lines += ["", "Requests whose client went away (seen from the origin)"]
    if drain:
        rel = drain.get("release_seconds")
        lines.append("  slow client stopped: origin response "
                     + (f"ended after {rel:.1f} s" if rel is not None else
                        f"STILL OPEN after {drain['release_wait']:.0f} s"))
    sil = res.get("silent")
    if sil:
        rel = sil.get("release_seconds")
        head = (f"  silent held-open ({sil['answered']}/{sil['requested']} answered, "
                f"{sil['at_origin']} at origin), clients closed: ")
        if not sil["at_origin"]:
            lines.append(head + "inconclusive, none reached the origin")
        else:
            lines.append(head + "origin saw all gone "
                         + (f"after {rel:.1f} s" if rel is not None else
                            f"NOT within {sil['release_wait']:.0f} s "
                            f"({sil.get('still_open_at_origin')} still open)"))
    if holds:
        lines.append(f"  held-open: {holds.get('answered', 0)}/{holds['requested']} answered "
                     f"through the tunnel, {holds.get('at_origin', 0)} reached the origin")
        rel = holds.get("release_seconds")
        lines.append("  held-open clients closed: origin saw all gone "
                     + (f"after {rel:.1f} s" if rel is not None else
                        f"NOT within {holds['release_wait']:.0f} s "
                        f"({holds.get('still_open_at_origin')} still open)"))
    after = res.get("tunnel_after")
    if after:
        lines.append("  tunnel GET / afterwards: "
                     + (f"{after['status']} in {after['ms']:.0f} ms" if after.get("status")
                        else f"FAILED ({after.get('error')})"))
    stop = res.get("stop_seconds", {})
    if stop.get("connector") is not None:
        lines.append(f"  connector stop after SIGTERM (grace period 1 s): "
                     f"{stop['connector']:.1f} s")
    for name, err in res.get("errors", {}).items():
        errors.append(f"phase {name} failed: {err}")
    if errors:
        lines += ["", "Errors:"] + [f"  {e}" for e in errors]
    lines.append("")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ main


def pick_loadgen(wanted: str) -> str:
    if wanted == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if wanted == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk), use --loadgen python")
    return wanted


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def run_phase(res: dict[str, Any], name: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except (BenchError, OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
        log(f"phase {name} failed: {exc}")
        res.setdefault("errors", {})[name] = str(exc).splitlines()[0] if str(exc) else repr(exc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="shorter runs and 50 MB transfers (about a minute)")
    parser.add_argument("--quic-backend", choices=["qh3", "aioquic"], default="qh3")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto",
                        help="small-request load generator (auto: wrk when installed)")
    parser.add_argument("--uvloop", action="store_true",
                        help="experiment: run edge and connector on uvloop (not the default)")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the temporary directory with every process's output")
    args = parser.parse_args(argv)
    if not shutil.which("curl"):
        raise SystemExit("curl is needed for the transfer and slow-client measurements")
    plan = QUICK if args.quick else FULL
    loadgen = pick_loadgen(args.loadgen)
    if loadgen == "wrk":
        wrk_v = subprocess.run(["wrk", "--version"], capture_output=True, text=True,
                               check=False).stdout.split(" [")[0]
        loadgen_name = wrk_v or "wrk"
    else:
        loadgen_name = "bench/_loadgen.py (asyncio, keep-alive)"
    res: dict[str, Any] = {
        "meta": {
            "backend": args.quic_backend, "backend_version": version_of(args.quic_backend),
            "nbtunnel": version_of("nbtunnel"), "python": platform.python_version(),
            "cpus": os.cpu_count(), "loadgen": loadgen_name, "uvloop": args.uvloop,
            "loadavg_1min_at_start": round(os.getloadavg()[0], 2),
            "mode": "quick" if args.quick else "full", "transfer_mb": plan.transfer_bytes // MB,
            "targets": {"get_c50_rps": TARGET_RPS_C50, "transfer_mbps": TARGET_MBPS,
                        "drain_rss_growth_mb": TARGET_RSS_GROWTH_MB},
        },
        "get_c1": {}, "get_c50": {}, "download": {}, "upload": {}, "rss": {},
    }

    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    work = Path(tempfile.mkdtemp(prefix="nbtunnel-bench-"))
    procs: list[Proc] = []
    ok = False
    try:
        log(f"starting origin, edge and connector ({args.quic_backend}) in {work}")
        s = start_all(work, args.quic_backend, args.uvloop, procs)
        log(f"tunnel {s.hostname} ready on {s.tunnel_url}")
        cpu = CpuMeter([s.edge, s.connector, s.origin.proc])
        time.sleep(1.0)
        res["rss"]["idle"] = sample_rss(s)
        run_phase(res, "rps", lambda: phase_rps(s, plan, loadgen, cpu, res))
        run_phase(res, "transfers", lambda: phase_transfers(s, plan, work, cpu, res))
        time.sleep(1.0)
        res["rss"]["after_load"] = sample_rss(s)
        # The two phases that abandon requests come last: a tunnel that leaks them may
        # stop serving (see bench/README.md).
        run_phase(res, "slow_drain", lambda: phase_slow_drain(s, plan, res))
        run_phase(res, "silent", lambda: phase_silent(s, plan, res))
        run_phase(res, "holds", lambda: phase_holds(s, plan, res))
        run_phase(res, "after", lambda: phase_after(s, res))
        ok = True
    except KeyboardInterrupt:
        log("interrupted")
    except BenchError as exc:
        log(f"setup failed: {exc}")
    finally:
        log("stopping processes")
        stops: dict[str, float | None] = {}
        for proc in reversed(procs):
            proc.stop(8.0 if proc.name == "connector" else 5.0)
            stops[proc.name] = proc.stop_seconds
        res["stop_seconds"] = stops
        for proc in procs:  # belt and braces: nothing may outlive the benchmark
            proc.kill()
        if args.keep_logs or not ok:
            log(f"process output kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(render(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
        log(f"results written to {args.json}")
    return 0 if ok and not res.get("errors") else 1


if __name__ == "__main__":
    sys.exit(main())
