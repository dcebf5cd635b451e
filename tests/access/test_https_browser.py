"""A real browser (Debian's Chromium, driven by Playwright) loads a page through the HTTPS front
over HTTP/2, and gets the edge's page for a TCP service."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.access.conftest import EchoServer, StartTunnel

CHROMIUM = os.environ.get("NBTUNNEL_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
playwright = pytest.importorskip("playwright.async_api", reason="playwright not installed")
if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium; `./dev test` does it "
                "when apt is usable)", allow_module_level=True)


async def test_chromium_over_http2(start: StartTunnel, echo: EchoServer) -> None:
    t = await start("hello_world")
    tcp = await start(f"tcp://{echo.address}")
    host, port = t.edge.https_address  # type: ignore[misc]
    # the quick-tunnel names resolve to 127.0.0.1; the certificate comes from the edge's own CA,
    # which this throw-away browser profile does not trust (the chain is checked by curl and
    # the access client in test_https_front.py)
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--host-resolver-rules=MAP *.localhost {host}"]
    ARTIFACTS.mkdir(exist_ok=True)
    async with playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            context = await browser.new_context(ignore_https_errors=True)
            page = await context.new_page()
            response = await page.goto(f"https://{t.hostname}:{port}/", timeout=30_000)
            assert response is not None and response.status == 200
            assert await page.title() == "nbtunnel hello world"
            protocol = await page.evaluate(
                "performance.getEntriesByType('navigation')[0].nextHopProtocol")
            assert protocol == "h2"
            await page.screenshot(path=str(ARTIFACTS / "https-front-h2.png"), full_page=True)
            response = await page.goto(f"https://{tcp.hostname}:{port}/", timeout=30_000)
            assert response is not None and response.status == 502
            assert "TCP service" in await page.content()
        finally:
            await browser.close()
