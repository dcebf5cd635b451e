"""Fixtures for the notebook layer: an isolated NBTUNNEL_HOME, a threaded origin, leak checks."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from nbtunnel.api.runtime import shutdown_runtime
from tests.notebook.nbhelpers import nbtunnel_threads, threaded_origin


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Own state dir, a free front port, the local edge pinned (never the network: the
    default `auto` would try Cloudflare first); afterwards nothing may be left."""
    home = tmp_path / "home"
    monkeypatch.setenv("NBTUNNEL_HOME", str(home))
    monkeypatch.setenv("NBTUNNEL_HTTP_PORT", "0")
    monkeypatch.setenv("NBTUNNEL_EDGE", "local")
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    yield home
    shutdown_runtime()
    assert nbtunnel_threads() == []


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"origin says {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def origin_port() -> Iterator[int]:
    """A plain threaded HTTP origin on 127.0.0.1 (independent of any event loop)."""
    with threaded_origin(_Handler) as port:
        yield port
