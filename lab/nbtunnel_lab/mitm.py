"""mitmproxy at the public and origin vantage points, embedded in its own thread.

One ``Master`` per process (mitmproxy keeps ``ctx`` globals), on its own loop: ``Master.run()``
installs an exception handler (and on 3.12 an eager task factory) that must not leak into the
lab's or a notebook's loop. ``Master`` + default addons, not ``DumpMaster``, which exits the
process on a bind error. Both vantage points are reverse HTTP modes of the one Master.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from nbtunnel_lab.records import Record, RecordStore

EDGE_HEADERS = ("cf-connecting-ip", "x-forwarded-for", "x-forwarded-proto", "cf-ray",
                "cf-visitor", "cf-warp-tag-id")


class MitmError(RuntimeError):
    """mitmproxy is missing or a vantage point could not listen."""


def available() -> bool:
    try:
        import mitmproxy  # noqa: F401
    except ImportError:
        return False
    return True


class HttpVantageAddon:
    """Records each HTTP exchange seen in a reverse mode as two records (request, response)."""

    def __init__(self, store: RecordStore, vantages: dict[str, str]) -> None:
        self.store = store
        self.vantages = vantages  # mode spec -> vantage name

    def _vantage(self, flow: Any) -> str:
        return self.vantages.get(flow.client_conn.proxy_mode.full_spec, "mitm")

    def response(self, flow: Any) -> None:
        req, resp = flow.request, flow.response
        vantage = self._vantage(flow)
        ray = resp.headers.get("cf-ray", "") or req.headers.get("cf-ray", "")
        added = {k: v for k, v in req.headers.items() if k.lower() in EDGE_HEADERS}
        self.store.add(Record(
            vantage, req.timestamp_start, "http",
            f"{req.method} {req.path} Host={req.host_header} "
            + " ".join(f"{k}={v}" for k, v in added.items()),
            "request", kind="request", ray=ray,
            fields={"method": req.method, "path": req.path, "host": req.host_header,
                    "headers": list(req.headers.items()), "bytes": len(req.raw_content or b"")}))
        end = resp.timestamp_end or resp.timestamp_start
        self.store.add(Record(
            vantage, end, "http", f"{resp.status_code} {resp.reason} Cf-Ray={ray}",
            "response", kind="response", ray=ray,
            fields={"status": resp.status_code, "headers": list(resp.headers.items()),
                    "bytes": len(resp.raw_content or b""),
                    "elapsed": end - req.timestamp_start}))

    def error(self, flow: Any) -> None:
        self.store.add(Record(self._vantage(flow), flow.error.timestamp, "http",
                              f"error {flow.error.msg}", "response", kind="error"))


class MitmVantages:
    """Start ``{name: upstream_url}`` reverse proxies; ``addresses[name]`` is where each listens."""

    def __init__(self, upstreams: dict[str, str], store: RecordStore, confdir: Path) -> None:
        self.upstreams = upstreams
        self.store = store
        self.confdir = confdir
        self.addresses: dict[str, tuple[str, int]] = {}
        self._thread: threading.Thread | None = None
        self._master: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 20.0) -> None:
        if not available():
            raise MitmError("mitmproxy is not installed: pip install 'nbtunnel[lab]'")
        self._thread = threading.Thread(target=self._run, name="nbtunnel-lab-mitmproxy",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise MitmError(f"mitmproxy did not start within {timeout}s")
        if self._error is not None:
            err = self._error
            self.stop()
            raise MitmError(f"mitmproxy failed to start: {err}") from err

    def stop(self) -> None:
        master = self._master
        if master is not None:
            master.shutdown()  # thread-safe: call_soon_threadsafe on its own loop
        if self._thread is not None:
            self._thread.join(15)
            self._thread = None
        self._master = None

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start() through _error
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        from mitmproxy import addons, master, options

        specs = {name: f"reverse:{url}@127.0.0.1:0" for name, url in self.upstreams.items()}
        self.confdir.mkdir(parents=True, exist_ok=True)
        opts = options.Options(mode=list(specs.values()), confdir=str(self.confdir))
        m = master.Master(opts, with_termlog=False)
        m.addons.add(*addons.default_addons())
        m.addons.add(HttpVantageAddon(self.store, {v: k for k, v in specs.items()}))
        m.options.update(keep_host_header=True, ssl_insecure=True)
        self._master = m
        run = asyncio.ensure_future(m.run())
        try:
            async with asyncio.timeout(15):
                while not self._bound(m, specs):
                    if run.done():
                        run.result()
                    await asyncio.sleep(0.02)
        except BaseException as exc:
            self._error = exc
            m.shutdown()
            await asyncio.gather(run, return_exceptions=True)
            await m.addons.get("proxyserver").servers.update([])
            return
        self._ready.set()
        try:
            await run
        finally:  # Master.run() ends without closing the listeners (mitmdump just exits)
            await m.addons.get("proxyserver").servers.update([])

    def _bound(self, m: Any, specs: dict[str, str]) -> bool:
        servers = list(m.addons.get("proxyserver").servers)
        for server in servers:
            if server.last_exception is not None:
                raise MitmError(f"{server.mode.full_spec}: {server.last_exception}")
        if len(servers) < len(specs) or not all(s.is_running for s in servers):
            return False
        by_spec = {s.mode.full_spec: s for s in servers}
        for name, spec in specs.items():
            host, port = by_spec[spec].listen_addrs[0][:2]
            self.addresses[name] = (str(host), int(port))
        return True
