"""`%tunnel 8000 --edge cloudflare` in a real IPython shell, offline: Cloudflare is played on
127.0.0.1 from its own thread (the magic blocks the caller, as in a notebook), and the
default `auto` falling back to a local edge with one line."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Coroutine, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from IPython.testing import globalipapp
from IPython.utils.capture import capture_output

from nbtunnel.api.runtime import shutdown_runtime
from tests.cloudflare.cfcloud import Cloud, start_cloud, stop_cloud
from tests.cloudflare.cfstubs import DnsStub

T = TypeVar("T")


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"origin says {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


class LoopThread:
    """An event loop in its own thread, for servers a blocking caller talks to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="cf-test-loop",
                                       daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def origin_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def ip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("NBTUNNEL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NBTUNNEL_HTTP_PORT", "0")
    monkeypatch.delenv("NBTUNNEL_EDGE", raising=False)
    # the module attribute, not an imported name: once started it is the real one
    shell = globalipapp.get_ipython()
    shell.run_line_magic("load_ext", "nbtunnel")
    yield shell
    shutdown_runtime()
    shell.run_line_magic("unload_ext", "nbtunnel")


@pytest.fixture
def threaded_cloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                   ) -> Iterator[tuple[Cloud, LoopThread]]:
    runner = LoopThread()
    cloud = runner.run(start_cloud(tmp_path))
    for key, value in cloud.env.items():
        monkeypatch.setenv(key, value)
    yield cloud, runner
    shutdown_runtime()  # the tunnel goes before the edge it is connected to
    runner.run(stop_cloud(cloud))
    runner.close()


@pytest.mark.parametrize("protocol", ["quic", "http2", None])
def test_magic_on_cloudflare(ip: Any, threaded_cloud: tuple[Cloud, LoopThread],
                             origin_port: int, protocol: str | None) -> None:
    cloud, runner = threaded_cloud
    flag = f"--protocol {protocol} " if protocol else ""
    with capture_output() as out:
        result = ip.run_cell(
            f"t = %tunnel {origin_port} --edge cloudflare {flag}"
            f"--cacert {cloud.pki.ca_path} --quick-service {cloud.api_url}")
    assert result.success, result.error_in_exec
    t = ip.user_ns["t"]
    assert t.url.startswith("https://") and t.url.endswith(".trycloudflare.com")
    assert t.public and "anyone who has it can reach your service" in out.stdout
    assert "using Cloudflare's edge" in out.stdout
    assert "this URL is public" in t.summary()
    status, body = runner.run(cloud.fetch(t.hostname, "/from-magic"))
    assert (status, body) == (200, b"origin says /from-magic")
    # ONE connection; without --protocol, QUIC with the HTTP/2 fallback (UDP may be blocked)
    assert [c.protocol for c in t.connections] == [protocol or "auto"]
    hellos = cloud.hellos()
    assert len(hellos) == 1
    assert hellos[0].server_name == ("h2.cftunnel.com" if protocol == "http2"
                                     else "quic.cftunnel.com")


@pytest.mark.parametrize("how", ["magic", "python"])
def test_default_auto_falls_back_with_one_line(ip: Any, origin_port: int, how: str) -> None:
    """`%tunnel 8000` and plain `nbtunnel.open_tunnel(8000)` both say, once, that the URL is
    a local one and why (an INFO log line would not show in a script)."""
    runner = LoopThread()
    stub = runner.run(DnsStub.start({}))
    stub.refuse = True
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("NBTUNNEL_DNS", stub.address)
            mp.setenv("NBTUNNEL_DOT", "off")
            code = (f"t = %tunnel {origin_port}" if how == "magic" else
                    f"import nbtunnel; t = nbtunnel.open_tunnel({origin_port})")
            with capture_output() as out:
                result = ip.run_cell(code)
        assert result.success, result.error_in_exec
        t = ip.user_ns["t"]
        lines = [line for line in out.stdout.splitlines()
                 if "Cloudflare's edge is not reachable" in line]
        assert len(lines) == 1 and "started a local edge" in lines[0]
        assert not t.public and ".localhost" in t.url
        request = urllib.request.Request(f"http://127.0.0.1:{t.front[1]}/x",
                                         headers={"Host": t.hostname})
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.read() == b"origin says /x"
    finally:
        shutdown_runtime()
        stub.close()
        runner.close()
