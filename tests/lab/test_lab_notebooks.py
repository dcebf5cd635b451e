"""The lab notebooks run top to bottom in a real kernel (nbclient), as CI does."""

from __future__ import annotations

from pathlib import Path

import pytest
from lab_helpers import has_mitmproxy

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def _run(name: str, tmp_path: Path) -> list[dict[str, object]]:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def test_control_plane_notebook(tmp_path: Path) -> None:
    outputs = _run("02-control-plane.ipynb", tmp_path)
    html = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert any("registerConnection" in h for h in html)


@pytest.mark.skipif(not has_mitmproxy(), reason="the lab extra (mitmproxy) is not installed")
def test_data_plane_notebook_draws_the_sequence(tmp_path: Path) -> None:
    outputs = _run("03-data-plane.ipynb", tmp_path)
    html = "".join(o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {}))
    assert "<svg" in html and "origin proxy" in html and "Cf-Connecting-Ip" in html
