"""Jupyter itself through the tunnel: a Jupyter Server with its default configuration and a
token, a kernel that runs `%tunnel <port>`, and headless Chromium that opens the tunnel URL,
logs in, creates a notebook and runs a cell over the kernel WebSocket. With `--auth token` the
browser gets a 401 until it follows the token link. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager

from tests.scale.services import free_port

CHROMIUM = os.environ.get("NBTUNNEL_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def jupyter(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """`jupyter server` as a user starts it: default configuration, a token, its own dirs."""
    pytest.importorskip("jupyter_server")
    root = tmp_path / "root"
    root.mkdir()
    token, port = secrets.token_hex(16), free_port()
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_DATA_DIR=str(
                   tmp_path / "data"))
    log = tmp_path / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(log.read_text()[-3000:]) from None
                time.sleep(0.2)
        yield port, token
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "jupyter-server.log").write_bytes(log.read_bytes()[-200_000:])


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Any]:
    """A real ipykernel with its own NBTUNNEL_HOME and a free public-front port."""
    km = KernelManager(kernel_name="python3")
    env = dict(os.environ, NBTUNNEL_HOME=str(tmp_path / "nbhome"), NBTUNNEL_HTTP_PORT="0")
    env.pop("NBTUNNEL_EDGE", None)
    km.start_kernel(cwd=str(tmp_path), env=env)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def _run(kc: Any, code: str) -> str:
    out: list[str] = []
    reply = kc.execute_interactive(code, timeout=90, output_hook=lambda m: out.append(
        m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
    assert reply["content"]["status"] == "ok", reply["content"]
    return "".join(out)


def _open_tunnel(kc: Any, line: str) -> tuple[str, str]:
    out = _run(kc, f"%load_ext nbtunnel\nt = %tunnel {line}\nprint('URL', t.url)")
    url = re.search(r"^URL (\S+)$", out, re.M)
    assert url, out
    return url.group(1), out


def _browser() -> Any:
    sync = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    return sync


def _login_create_run(page: Any, url: str, token: str, shot: str) -> None:
    page.goto(f"{url}/login")
    page.fill("input[type=password]", token)
    page.keyboard.press("Enter")
    page.wait_for_load_state("networkidle")
    assert "/login" not in page.url, page.content()[:2000]
    # create a notebook and start a kernel with the XSRF cookie, as Jupyter's front end does
    result = page.evaluate("""async () => {
        const xsrf = document.cookie.split('; ').find(c => c.startsWith('_xsrf='))
            ?.split('=')[1];
        const h = {'Content-Type': 'application/json', 'X-XSRFToken': xsrf};
        const nb = await (await fetch('/api/contents/through-the-tunnel.ipynb', {
            method: 'PUT', headers: h, body: JSON.stringify({type: 'notebook', format: 'json',
            content: {cells: [], nbformat: 4, nbformat_minor: 5, metadata: {kernelspec: {
                name: 'python3', display_name: 'Python 3 (ipykernel)',
                language: 'python'}}}})})).json();
        const k = await (await fetch('/api/kernels', {method: 'POST', headers: h,
            body: JSON.stringify({name: 'python3'})})).json();
        const ws = new WebSocket(location.origin.replace('http', 'ws') +
            '/api/kernels/' + k.id + '/channels');
        return await new Promise((resolve, reject) => {
            const msgId = 'nbtunnel-test';
            ws.onerror = () => reject('websocket error');
            ws.onclose = e => reject('websocket closed ' + e.code);
            ws.onopen = () => ws.send(JSON.stringify({
                header: {msg_id: msgId, msg_type: 'execute_request', username: '',
                         session: 's', version: '5.3', date: new Date().toISOString()},
                parent_header: {}, metadata: {}, channel: 'shell', buffers: [],
                content: {code: 'print(6*7)', silent: false, store_history: false,
                          user_expressions: {}, allow_stdin: false}}));
            ws.onmessage = e => {
                const m = JSON.parse(e.data);
                if (m.parent_header.msg_id === msgId && m.msg_type === 'stream') {
                    ws.onclose = null; ws.close();
                    resolve({notebook: nb.path, output: m.content.text});
                }
            };
        });
    }""")
    assert result["output"].strip() == "42", result
    assert result["notebook"].endswith(".ipynb")
    page.goto(f"{url}/lab/tree/{result['notebook']}")  # JupyterLab, when installed
    try:
        page.locator(".jp-Notebook").wait_for(timeout=30_000)
    except Exception:  # a server without JupyterLab: its own page is enough
        page.wait_for_load_state("networkidle")
    else:  # and a cell run from Lab's own UI, over its kernel WebSocket through the tunnel
        page.wait_for_function("() => document.body.innerText.includes('| Idle')",
                               timeout=60_000)
        cell = page.locator(".jp-Cell .cm-content").first
        cell.click()
        page.keyboard.type("print(6 * 7, 'via the tunnel')")
        for _ in range(3):  # the first Shift+Enter after load sometimes only focuses
            page.keyboard.press("Shift+Enter")
            try:
                page.locator(".jp-OutputArea-output", has_text="42 via the tunnel").wait_for(
                    timeout=15_000)
                break
            except Exception:  # retried, then asserted below
                cell.click()
        assert page.locator(".jp-OutputArea-output", has_text="42 via the tunnel").count()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / shot), full_page=True)


def test_jupyter_through_the_tunnel_in_a_browser(jupyter: tuple[int, str], kernel: Any) -> None:
    port, token = jupyter
    url, out = _open_tunnel(kernel, str(port))
    assert "Jupyter Server" in out and f"Host: localhost:{port}" in out, out
    sync = _browser()
    with sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        try:
            _login_create_run(page, url, token, "jupyter-through-tunnel.png")
        finally:
            browser.close()
    # every request answered below 500; requests the closing browser abandoned (long polls,
    # the kernel and event WebSockets) end with an error but never with a 5xx status
    seen = json.loads(_run(kernel, "import json; print(json.dumps([(c.method, c.target, "
                                   "c.status, c.error) for c in t.requests]))"))
    assert len(seen) >= 5 and any(s == 101 for _, _, s, _ in seen), seen
    assert not [r for r in seen if r[2] >= 500], seen


def test_jupyter_with_auth_token(jupyter: tuple[int, str], kernel: Any) -> None:
    port, token = jupyter
    url, out = _open_tunnel(kernel, f"{port} --auth token")
    link = re.search(r"nbtunnel_token=(\S+)", out)
    assert link, out
    sync = _browser()
    with sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        try:
            resp = page.goto(f"{url}/login")
            assert resp is not None and resp.status == 401
            assert "401 Unauthorized" in page.content()
            page.goto(f"{url}/?nbtunnel_token={link.group(1)}")  # sets the cookie
            _login_create_run(page, url, token, "jupyter-auth-token.png")
        finally:
            browser.close()
    assert int(_run(kernel, "print(t.refused)")) >= 1  # the page, maybe its favicon
