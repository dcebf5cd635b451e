"""Benchmarks of several edges (issue 13), each short and bounded; PostgreSQL and Redis are
started from Debian's packages in temporary directories, like the tests do.

    .venv/bin/python bench/scale_bench.py [--seconds 4]

1. public-front requests/s of `nbtunnel edge --workers 1` vs `--workers 2` (a connector
   answering http_status:204, wrk as the client; all on this machine, so the load generator and
   the connector take CPU from the edge workers: the ratio is what to read);
2. latency added by a cross-edge forward: p50/p99 of sequential GETs through the edge holding
   the connector vs through another edge;
3. control-plane API latency (create a tunnel + route it) at concurrency 10, SQLite vs
   PostgreSQL;
4. route lookup with 10 vs 100,000 routes in PostgreSQL (the in-memory mirror: must not grow).
The machine is shared: run it when it is quiet, and compare ratios rather than absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nbtunnel.core.credentials import Credentials
from nbtunnel.edge.bootstrap import ensure_admin_token
from nbtunnel.edge.server import Edge, EdgeConfig
from nbtunnel.edge.stores.postgres import PostgresStore
from tests.scale.cluster import edges, run_connector, stop_connector, wait_held
from tests.scale.services import PostgresServer, RedisServer, free_port


def _pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


async def workers_rps(pg: PostgresServer, redis: RedisServer, workers: int,
                      seconds: float, tmp: Path) -> float:
    redis.flush()
    http, quic = free_port(), free_port()
    state = tmp / f"w{workers}"
    edge = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
        [sys.executable, "-m", "nbtunnel", "--loglevel", "warn", "edge", "--listen",
         f"127.0.0.1:{quic}", "--http", f"127.0.0.1:{http}", "--state-dir", str(state),
         "--store", pg.database(), "--presence", redis.url, "--quick-tunnel-rate", "0",
         "--workers", str(workers)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    connector = None
    try:
        base = f"http://127.0.0.1:{http}"
        async with aiohttp.ClientSession() as s:
            for _ in range(300):
                with contextlib.suppress(aiohttp.ClientError):
                    async with s.get(base + "/") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.1)
            async with s.post(base + "/tunnel") as resp:
                doc = (await resp.json())["result"]
        creds = Credentials(doc["account_tag"], uuid.UUID(doc["id"]),
                            __import__("base64").b64decode(doc["secret"]))
        home = tmp / f"home{workers}"
        connector = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "nbtunnel", "--loglevel", "warn", "tunnel", "run", "--token",
             creds.to_token(), "--edge", f"127.0.0.1:{quic}", "--cacert",
             str(state / "ca.pem"), "--url", "http_status:204", "--ha-connections", "4"],
            env={**os.environ, "NBTUNNEL_HOME": str(home), "HOME": str(home)},
            stdin=subprocess.DEVNULL)
        host = doc["hostname"]
        async with aiohttp.ClientSession() as s:
            for _ in range(300):  # every worker must serve it (locally or forwarded)
                ok = 0
                for _ in range(8):
                    async with aiohttp.ClientSession() as fresh, fresh.get(
                            base + "/", headers={"Host": host}) as resp:
                        ok += resp.status == 204
                if ok == 8:
                    break
                await asyncio.sleep(0.2)
        done = await asyncio.to_thread(
            subprocess.run, ["wrk", "-t", "1", "-c", "32", "-d", f"{seconds:g}s", "-H",
                             f"Host: {host}", base + "/"],
            capture_output=True, text=True, timeout=seconds + 30, check=True)
        out = done.stdout
        match = re.search(r"Requests/sec:\s+([\d.]+)", out)
        return float(match.group(1)) if match else 0.0
    finally:
        for proc in (connector, edge):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


async def cross_edge_latency(pg: PostgresServer, redis: RedisServer, tmp: Path,
                             n: int) -> dict[str, tuple[float, float]]:
    redis.flush()
    out: dict[str, tuple[float, float]] = {}
    async with edges(tmp / "x", pg.database(), redis.url, ("a", "b")) as two:
        a, b = two["a"], two["b"]
        assert a.store is not None
        t = await a.store.create_tunnel("lat", account_tag="bench")
        await a.store.claim_route("lat.example.com", t.id, account_tag="bench")
        creds = Credentials(t.account_tag, t.id, t.secret)
        running = await run_connector([a.quic_address], creds, "http_status:204", a.ca_path)
        try:
            await wait_held(b, t.id, "a")
            async with aiohttp.ClientSession() as s:
                for name, edge in (("local (edge holding the connector)", a),
                                   ("cross-edge (forwarded to it)", b)):
                    url = "http://{}:{}/".format(*edge.public_address)
                    times = []
                    for i in range(n + 20):
                        t0 = time.perf_counter()
                        async with s.get(url, headers={"Host": "lat.example.com"}) as resp:
                            await resp.read()
                        if i >= 20:  # warm-up: links and pools
                            times.append(time.perf_counter() - t0)
                    out[name] = (_pct(times, 50) * 1000, _pct(times, 99) * 1000)
        finally:
            await stop_connector(*running)
    return out


async def api_latency(store: str | None, tmp: Path, calls: int) -> tuple[float, float]:
    async with Edge(EdgeConfig(state_dir=tmp, quic_port=0, http_port=0, store=store)) as edge:
        assert edge.store is not None
        path, token = await ensure_admin_token(edge.store, tmp)
        headers = {"Authorization": f"Bearer {token or path.read_text().strip()}"}
        times: list[float] = []
        sem = asyncio.Semaphore(10)
        async with aiohttp.ClientSession(headers=headers) as s:
            async def one(i: int) -> None:
                async with sem:
                    t0 = time.perf_counter()
                    async with s.post(f"{edge.api_url}/api/v1/tunnels",
                                      json={"name": f"t{i}"}) as resp:
                        tid = (await resp.json())["result"]["id"]
                    async with s.post(f"{edge.api_url}/api/v1/routes", json={
                            "hostname": f"h{i}.example.com", "tunnel_id": tid}) as resp:
                        assert resp.status == 201
                    times.append(time.perf_counter() - t0)

            await asyncio.gather(*(one(i) for i in range(calls)))
    return _pct(times, 50) * 1000, _pct(times, 95) * 1000


async def route_lookup(pg: PostgresServer) -> list[tuple[int, float, float]]:
    """(routes, seconds to load the mirror, ns per resolve()) for 10 and 100,000 routes."""
    import psycopg

    rows = []
    for count in (10, 100_000):
        url = pg.database()
        first = PostgresStore(url)
        await first.start()
        t = await first.create_tunnel("many", account_tag="bench")
        await first.aclose()
        async with await psycopg.AsyncConnection.connect(url) as conn:
            async with conn.cursor().copy("COPY routes (hostname, tunnel_id, created_at)"
                                          " FROM STDIN") as copy:
                for i in range(count):
                    await copy.write_row((f"r{i}.example.com", t.id, 0.0))
            await conn.commit()
        store = PostgresStore(url)
        t0 = time.perf_counter()
        await store.start()
        loaded = time.perf_counter() - t0
        names = [f"r{i}.example.com" for i in range(0, count, max(1, count // 1000))]
        t0 = time.perf_counter()
        rounds = 200
        for _ in range(rounds):
            for name in names:
                store.resolve(name)
        per = (time.perf_counter() - t0) / (rounds * len(names)) * 1e9
        rows.append((count, loaded, per))
        await store.aclose()
    return rows


async def main(seconds: float) -> None:
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk): skipping the workers comparison")
    pg, redis = PostgresServer(), RedisServer()
    pg.start()
    redis.start()
    tmp = Path(tempfile.mkdtemp(prefix="nbtunnel-scale-bench-"))
    try:
        if shutil.which("wrk"):
            one = await workers_rps(pg, redis, 1, seconds, tmp)
            two = await workers_rps(pg, redis, 2, seconds, tmp)
            print(f"public front, http_status:204, wrk -c32 {seconds:g}s: 1 worker {one:7.0f} "
                  f"req/s, 2 workers {two:7.0f} req/s, ratio {two / one:.2f} (2 cores shared "
                  "with wrk and the connector)")
        for name, (p50, p99) in (await cross_edge_latency(pg, redis, tmp, 300)).items():
            print(f"sequential GET, {name:<36}: p50 {p50:6.2f} ms, p99 {p99:6.2f} ms")
        for label, spec in (("SQLite", None), ("PostgreSQL", pg.database())):
            p50, p95 = await api_latency(spec, tmp / f"api-{label}", 200)
            print(f"API create tunnel + route, concurrency 10, {label:<10}: p50 {p50:6.2f} ms,"
                  f" p95 {p95:6.2f} ms (200 pairs)")
        for count, loaded, per in await route_lookup(pg):
            print(f"route lookup, {count:>7} routes in PostgreSQL: {per:6.0f} ns per resolve() "
                  f"(mirror loaded in {loaded:.2f} s at start)")
    finally:
        redis.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="wrk duration per run")
    asyncio.run(main(parser.parse_args().seconds))
