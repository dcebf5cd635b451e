"""03-data-plane in JupyterLab (headless Debian Chromium): Run All, the sequence diagram renders.

Reuses the notebook layer's browser test: its JupyterLab server fixture, Chromium path and
arguments. Screenshot: test-artifacts/lab-sequence-diagram.png (and lab-browser-failure.png).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lab_helpers import needs_mitmproxy

# skips this module (no playwright / jupyterlab / chromium) exactly when that test skips
browser = pytest.importorskip("tests.notebook.test_lab_browser")
ARGS, ARTIFACTS, CHROMIUM = browser.ARGS, browser.ARTIFACTS, browser.CHROMIUM
playwright_sync = browser.playwright_sync
lab = browser.lab  # the JupyterLab server fixture (serves <tmp_path>/root)

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "03-data-plane.ipynb"


@needs_mitmproxy
@pytest.mark.timeout(300)
def test_data_plane_notebook_in_jupyterlab(lab: str, tmp_path: Path) -> None:
    shutil.copy(NOTEBOOK, tmp_path / "root" / NOTEBOOK.name)
    url = lab.replace("/lab/tree/tunnel.ipynb", f"/lab/tree/{NOTEBOOK.name}")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_sync.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(url)
            page.wait_for_function("() => document.body.innerText.includes('| Idle')",
                                   timeout=60_000)
            svg = page.locator(".jp-OutputArea-output svg").first
            started = ("() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
                       ".some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))")
            for _ in range(3):  # right after load a menu click is sometimes swallowed
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
                try:  # retry only while nothing runs: a second Run All would queue a rerun
                    page.wait_for_function(started, timeout=10_000)
                    break
                except playwright_sync.TimeoutError:
                    continue
            svg.wait_for(state="attached", timeout=120_000)
            # the last cell (lab.stop()) has run: every code cell has a number, kernel idle
            page.wait_for_function(
                "() => { const p = [...document.querySelectorAll('.jp-CodeCell "
                ".jp-InputPrompt')]; return p.length > 0 && p.every(e => /\\[\\d+\\]/"
                ".test(e.textContent)) && document.body.innerText.includes('| Idle'); }",
                timeout=120_000)
            assert not page.locator(".jp-OutputArea-output[data-mime-type*='error']").count()
            svg.scroll_into_view_if_needed()
            box = svg.bounding_box()
            assert box is not None and box["width"] > 200 and box["height"] > 100, box
            labels = svg.locator("text").all_text_contents()
            assert any("origin proxy" in t for t in labels), labels
            svg.screenshot(path=str(ARTIFACTS / "lab-sequence-diagram.png"))
            page.screenshot(path=str(ARTIFACTS / "lab-data-plane-notebook.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "lab-browser-failure.png"), full_page=True)
            raise
        finally:
            chromium.close()
