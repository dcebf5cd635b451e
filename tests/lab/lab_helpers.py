"""Helpers for the lab tests: labs are synchronous objects with their own threads."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest


def has_mitmproxy() -> bool:
    try:
        import mitmproxy  # noqa: F401
    except ImportError:
        return False
    return True


needs_mitmproxy = pytest.mark.skipif(not has_mitmproxy(),
                                     reason="the lab extra (mitmproxy) is not installed")


@dataclass
class CountingOrigin:
    """An origin that answers every path with that path and counts what it received."""

    url: str
    seen: list[str] = field(default_factory=list)


@pytest.fixture
def counting_origin() -> Iterator[CountingOrigin]:
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            seen.append(self.path)
            body = f"path={self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="test-origin", daemon=True)
    thread.start()
    try:
        yield CountingOrigin(f"http://127.0.0.1:{server.server_address[1]}", seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
