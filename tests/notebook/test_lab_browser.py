"""JupyterLab in headless Debian Chromium (Playwright from PyPI, no browser download).

Runs `%tunnel` in a real notebook page, waits for the widget to show the URL and four registered
connections, clicks Stop and waits for the state change. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from tests.scale.services import free_port

CHROMIUM = os.environ.get("NBTUNNEL_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

playwright_sync = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
pytest.importorskip("jupyterlab", reason="jupyterlab not installed")
if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium; `./dev test` does it "
                "when apt is usable)", allow_module_level=True)


@contextlib.contextmanager
def run_lab(tmp_path: Path, cells: list[str]) -> Iterator[str]:
    """A JupyterLab server on 127.0.0.1 with its own config/runtime/settings dirs, serving a
    notebook made of `cells`; yields the notebook's URL."""
    root = tmp_path / "root"
    root.mkdir()
    code = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(cells=[code(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                 "language": "python"}
    nbformat.write(nb, root / "tunnel.ipynb")
    token, port = secrets.token_hex(16), free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
         f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "lab.log", "wb"))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((tmp_path / "lab.log").read_text()[-3000:]) from None
                time.sleep(0.2)
        yield f"{base}/lab/tree/tunnel.ipynb?token={token}"
    finally:
        proc.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if ARTIFACTS.exists():
            shutil.copy(tmp_path / "lab.log", ARTIFACTS / "lab-server.log")




def run_first_cell_until_panel(page: playwright_sync.Page) -> None:
    """Wait for the kernel, run the first cell, and wait for the nbtunnel panel's URL."""
    page.wait_for_function("() => document.body.innerText.includes('| Idle')", timeout=60_000)
    cell = page.locator(".jp-Cell .cm-content").first
    for _ in range(3):  # the first Shift+Enter after load sometimes only focuses
        cell.click()
        page.keyboard.press("Shift+Enter")
        try:
            page.locator(".nbtunnel-widget .nbtunnel-url").wait_for(timeout=20_000)
            return
        except playwright_sync.TimeoutError:
            continue
    raise AssertionError("the nbtunnel panel never showed after running the first cell")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[str]:
    with run_lab(tmp_path, ["%load_ext nbtunnel\nt = %tunnel hello_world"]) as url:
        yield url


def test_widget_in_jupyterlab(lab: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            page.goto(lab)
            # status bar "Python 3 (ipykernel) | Idle": the kernel is up
            run_first_cell_until_panel(page)
            url = page.locator(".nbtunnel-widget .nbtunnel-url").inner_text()
            assert url.startswith("http://") and ".localhost" in url
            registered = page.locator(".nbtunnel-widget .nbtunnel-connections .nbtunnel-state",
                                      has_text="registered")
            page.wait_for_function(
                "() => [...document.querySelectorAll("
                "'.nbtunnel-widget .nbtunnel-connections .nbtunnel-state')]"
                ".filter(e => e.textContent === 'registered').length === 4", timeout=30_000)
            assert registered.count() == 4
            page.screenshot(path=str(ARTIFACTS / "lab-tunnel-connected.png"), full_page=True)

            page.locator("button.nbtunnel-stop").click()
            page.locator(".nbtunnel-widget .nbtunnel-header .nbtunnel-state",
                         has_text="stopped").wait_for(timeout=30_000)
            page.wait_for_function(
                "() => [...document.querySelectorAll("
                "'.nbtunnel-widget .nbtunnel-connections .nbtunnel-state')]"
                ".every(e => e.textContent === 'closed')", timeout=15_000)
            page.screenshot(path=str(ARTIFACTS / "lab-tunnel-stopped.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "lab-failure.png"), full_page=True)
            raise
        finally:
            browser.close()


INSPECTOR_CELLS = [
    """import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Echo(BaseHTTPRequestHandler):
    def _answer(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self._answer(f"hello {self.path} at {__import__('time').time():.3f}".encode())
    def do_POST(self):
        n = len(self.rfile.read(int(self.headers["Content-Length"])))
        self._answer(f"stored {n} bytes".encode())
    def log_message(self, *a):
        pass

origin = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
threading.Thread(target=origin.serve_forever, daemon=True).start()
%load_ext nbtunnel
t = %tunnel {origin.server_address[1]}""",
    """for i in range(19):
    t.get(f"/items/{i}?page={i}", headers={"Authorization": "Bearer not-shown"})
t.get("/upload", method="POST", body=b'{"rows": [' + b'1234567890,' * 900 + b'0]}',
      headers={"Content-Type": "application/json"})
print("sent", len(t.requests))""",
]


def test_inspector_in_jupyterlab(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with run_lab(tmp_path, INSPECTOR_CELLS) as url, \
            playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        try:
            page.goto(url)
            page.wait_for_function("() => document.body.innerText.includes('| Idle')",
                                   timeout=60_000)
            page.locator(".jp-Cell .cm-content").first.click()
            for _ in range(3):  # the first run after load sometimes only focuses
                page.locator(".jp-Cell .cm-content").first.click()
                page.keyboard.press("Shift+Enter")
                page.keyboard.press("Shift+Enter")
                try:
                    page.locator(".jp-OutputArea-output", has_text="sent 20").wait_for(
                        timeout=30_000)
                    break
                except playwright_sync.TimeoutError:
                    continue
            page.locator(".nbtunnel-inspector-box .jupyter-widget-Collapse-header").click()
            options = page.locator(".nbtunnel-requests select option")
            page.wait_for_function(
                "() => document.querySelectorAll('.nbtunnel-requests select option')"
                ".length === 20", timeout=20_000)
            assert "POST /upload" in options.first.inner_text().replace("\xa0", " ")
            page.locator(".nbtunnel-requests select").select_option(index=0)
            details = page.locator(".nbtunnel-inspect")
            details.locator("text=first 4096 bytes shown").wait_for(timeout=10_000)
            assert "stored 9913 bytes" in details.inner_text()
            page.locator(".nbtunnel-requests select").select_option(index=5)
            details.locator("text=[masked, 16 chars]").wait_for(timeout=10_000)
            page.locator("button.nbtunnel-replay").click()
            details.locator("text=Replay #21: 200").wait_for(timeout=20_000)
            text = details.inner_text()
            assert text.count("hello /items/") >= 2  # the old and the new response, side by side
            page.locator(".nbtunnel-widget").first.screenshot(
                path=str(ARTIFACTS / "lab-inspector-replay.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "lab-inspector-failure.png"), full_page=True)
            raise
        finally:
            browser.close()


def test_saved_panel_shows_a_static_copy_without_its_kernel(tmp_path: Path) -> None:
    """Live: the widget shows and its static copy is hidden. After the kernel is gone and the
    notebook reopened, the widget's model no longer exists: the copy shows (the last state,
    saved through update_display) instead of 'Loading widget...'."""
    ARTIFACTS.mkdir(exist_ok=True)
    with run_lab(tmp_path, ["%load_ext nbtunnel\nt = %tunnel hello_world"]) as url, \
            playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        base, token = url.split("/lab/")[0], url.split("token=")[1]
        try:
            page.goto(url)
            run_first_cell_until_panel(page)
            assert page.locator(".nbtunnel-snapshot").count() == 1
            assert page.locator(".nbtunnel-snapshot").is_hidden()  # the live panel shows
            page.wait_for_function(
                "() => document.querySelector('.nbtunnel-snapshot').innerText"
                ".includes('connected')", timeout=30_000)  # kept current while live
            page.keyboard.press("Control+s")
            page.wait_for_function("() => !document.title.startsWith('*') && "
                                   "!document.querySelector('.jp-mod-dirty')", timeout=15_000)
            for k in page.request.get(f"{base}/api/kernels?token={token}").json():
                page.request.delete(f"{base}/api/kernels/{k['id']}?token={token}")
            page.reload()
            page.locator(".nbtunnel-snapshot").wait_for(state="visible", timeout=60_000)
            text = page.locator(".nbtunnel-snapshot").inner_text()
            assert "static copy" in text and ".localhost" in text and "connected" in text
            assert page.locator("text=Loading widget...").count() == 0 or \
                page.locator("text=Loading widget...").first.is_hidden()
            page.screenshot(path=str(ARTIFACTS / "lab-panel-static-copy.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "lab-snapshot-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
