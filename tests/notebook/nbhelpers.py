"""Small synchronous helpers shared by the notebook tests."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def fetch(front_port: int, hostname: str, path: str = "/", timeout: float = 10) -> tuple[int, str]:
    """GET through the edge's public front with the tunnel's Host header."""
    req = urllib.request.Request(f"http://127.0.0.1:{front_port}{path}",
                                 headers={"Host": hostname})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_until(cond: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def nbtunnel_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("nbtunnel")]


@contextmanager
def threaded_origin(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """A plain threaded HTTP origin on 127.0.0.1 (independent of any event loop); yields its
    port and is shut down and joined on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
