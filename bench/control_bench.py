"""Control-plane benchmarks: public-front requests/s with 10 vs 10,000 routes (routing must
not slow down with the table), and API latency for tunnel creation and route binding at
concurrency 10. Everything runs on 127.0.0.1 in one process.

    .venv/bin/python bench/control_bench.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from nbtunnel.connector.ingress import Ingress
from nbtunnel.connector.supervisor import Connector, ConnectorConfig
from nbtunnel.core.credentials import Credentials
from nbtunnel.edge.bootstrap import ensure_admin_token
from nbtunnel.edge.server import Edge, EdgeConfig


async def front_rps(edge: Edge, routes: int, seconds: float, concurrency: int = 20) -> float:
    store = edge.store
    assert store is not None
    tunnel = await store.create_tunnel(f"bench{routes}", account_tag="bench")
    filler = await store.create_tunnel(f"filler{routes}", account_tag="bench")
    for i in range(routes - 1):
        await store.add_route(f"r{i}.n{routes}.example.com", filler.id)
    host = f"target.n{routes}.example.com"
    await store.add_route(host, tunnel.id)
    connector = Connector(ConnectorConfig(
        edge=[edge.quic_address], credentials=Credentials(tunnel.account_tag, tunnel.id,
                                                          tunnel.secret),
        ingress=Ingress.single("http_status:204"), cacert=str(edge.ca_path), ha_connections=4))
    task = asyncio.get_running_loop().create_task(connector.run())
    await asyncio.wait_for(connector.wait_ready(4), 20)
    h, p = edge.public_address
    done = 0
    try:
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + seconds

            async def worker() -> None:
                nonlocal done
                while time.monotonic() < deadline:
                    async with s.get(f"http://{h}:{p}/", headers={"Host": host}) as r:
                        await r.read()
                        assert r.status == 204
                    done += 1

            start = time.monotonic()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return done / (time.monotonic() - start)
    finally:
        await connector.shutdown(grace=1)
        await task


async def api_latency(edge: Edge, token: str, n: int = 200,
                      concurrency: int = 10) -> dict[str, list[float]]:
    lat: dict[str, list[float]] = {"create tunnel": [], "bind route": []}
    hdr = {"Authorization": f"Bearer {token}"}
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(headers=hdr) as s:
        async def one(i: int) -> None:
            async with sem:
                t0 = time.perf_counter()
                async with s.post(f"{edge.api_url}/api/v1/tunnels",
                                  json={"name": f"api{i}"}) as r:
                    tid = (await r.json())["result"]["id"]
                t1 = time.perf_counter()
                async with s.post(f"{edge.api_url}/api/v1/routes",
                                  json={"hostname": f"api{i}.example.com",
                                        "tunnel_id": tid}) as r:
                    assert r.status == 201
                t2 = time.perf_counter()
                lat["create tunnel"].append(t1 - t0)
                lat["bind route"].append(t2 - t1)

        await asyncio.gather(*(one(i) for i in range(n)))
    return lat


async def main(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with Edge(EdgeConfig(state_dir=Path(tmp), quic_port=0, http_port=0)) as edge:
            for routes in (10, 10_000):
                rps = await front_rps(edge, routes, seconds)
                print(f"public front, {routes:>6} routes: {rps:8.0f} requests/s "
                      f"(20 clients, 4 HA connections, http_status:204)")
            assert edge.store is not None
            _, token = await ensure_admin_token(edge.store, Path(tmp))
            assert token is not None
            for name, values in (await api_latency(edge, token)).items():
                q = statistics.quantiles(values, n=100)
                print(f"API {name:<13} at concurrency 10: p50 {q[49] * 1000:6.2f} ms, "
                      f"p95 {q[94] * 1000:6.2f} ms, max {max(values) * 1000:6.2f} ms "
                      f"({len(values)} calls)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0)
    asyncio.run(main(ap.parse_args().seconds))
