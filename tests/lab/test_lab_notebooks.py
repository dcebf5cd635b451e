"""The lab notebooks run top to bottom in a real kernel (nbclient), as CI does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lab_helpers import has_mitmproxy

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
needs_mitmproxy = pytest.mark.skipif(not has_mitmproxy(),
                                     reason="the lab extra (mitmproxy) is not installed")


def _run(name: str, tmp_path: Path) -> list[Any]:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def _html(outputs: list[Any]) -> str:
    return "".join(o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {}))


def _text(outputs: list[Any]) -> str:
    """Streams and plain-text results, concatenated."""
    return "".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                   for o in outputs)


def test_notebooks_are_stored_without_outputs() -> None:
    for path in sorted(NOTEBOOKS.glob("0[2-6]-*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") and c.get("execution_count") is None
                   for c in nb.cells if c.cell_type == "code"), path.name


def test_control_plane_notebook(tmp_path: Path) -> None:
    outputs = _run("02-control-plane.ipynb", tmp_path)
    assert "registerConnection" in _html(outputs)


@needs_mitmproxy
def test_data_plane_notebook_draws_the_sequence(tmp_path: Path) -> None:
    html = _html(_run("03-data-plane.ipynb", tmp_path))
    assert "<svg" in html and "origin proxy" in html and "Cf-Connecting-Ip" in html


def test_failure_notebook_shows_reconnects(tmp_path: Path) -> None:
    outputs = _run("04-failure.ipynb", tmp_path)
    text = _text(outputs)
    assert "both connections back" in text and "reconnecting" in text and "idle timeout" in text
    assert "[200, 200, 200, 200]" in text


@needs_mitmproxy
def test_named_tunnels_notebook_pushes_a_configuration(tmp_path: Path) -> None:
    outputs = _run("05-named-tunnels.ipynb", tmp_path)
    text, html = _text(outputs), _html(outputs)
    assert "'applied_version': 1" in text and "updateConfiguration" in html
    assert "latestAppliedVersion=1" in html


def test_experiments_notebook_measures(tmp_path: Path) -> None:
    html = _html(_run("06-experiments.ipynb", tmp_path))
    assert "delay 50 ms both ways" in html and "MB/s" in html
