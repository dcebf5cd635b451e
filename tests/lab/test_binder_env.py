"""The Binder environment, built from ``binder/`` alone in a fresh Python 3.12 venv, runs every
notebook (what repo2docker does: ``pip install -r binder/requirements.txt`` from the repo root).

Building takes a minute or more, so the venv is cached in ``.venv-binder/`` and rebuilt only when
``binder/*`` or ``pyproject.toml`` change. It runs once per ``./dev test``: under Python 3.12 (the
``.venv-lab312`` pass), or anywhere with ``NBTUNNEL_BINDER_TEST=1``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BINDER = ROOT / "binder"
VENV = ROOT / ".venv-binder"

if sys.version_info[:2] != (3, 12) and os.environ.get("NBTUNNEL_BINDER_TEST") != "1":
    pytest.skip("runs in the Python 3.12 lab pass (or set NBTUNNEL_BINDER_TEST=1)",
                allow_module_level=True)

DRIVER = """
import json, sys, time
from pathlib import Path
import nbclient, nbformat
from jupyter_client.kernelspec import KernelSpecManager

spec = KernelSpecManager().get_kernel_spec("python3")
report = {"python": sys.version.split()[0], "kernel": spec.resource_dir, "notebooks": {}}
for path in sys.argv[2:]:
    nb = nbformat.read(path, as_version=4)
    start = time.monotonic()
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": sys.argv[1]}}).execute()
    report["notebooks"][Path(path).name] = round(time.monotonic() - start, 1)
print(json.dumps(report))
"""


def _python312() -> str | None:
    """A working python3.12: on PATH (a pyenv shim may exist without the version selected),
    else pyenv's own."""
    candidates = [shutil.which("python3.12") or ""]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")),
                         reverse=True)
    for exe in filter(None, candidates):
        try:
            subprocess.run([exe, "-c", ""], check=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        return exe
    return None


def _key() -> str:
    """What the environment is built from: binder/* and pyproject.toml."""
    h = hashlib.sha256()
    for path in [*sorted(p for p in BINDER.iterdir() if p.is_file()), ROOT / "pyproject.toml"]:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _binder_venv(python: str) -> Path:
    """The cached venv (rebuilt when the key changes); the stamp is written only on success."""
    stamp = VENV / f".binder-{_key()}"
    if stamp.exists():
        return VENV / "bin" / "python"
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([python, "-m", "venv", str(VENV)], check=True, timeout=120)
    log = VENV / "pip.log"
    with log.open("wb") as out:
        # like repo2docker: from the repo root, so `-e .` is the project
        proc = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install",
                               "--disable-pip-version-check", "-r", "binder/requirements.txt"],
                              cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=900)
    assert proc.returncode == 0, log.read_text()[-4000:]
    stamp.touch()
    return VENV / "bin" / "python"


@pytest.mark.timeout(1500)
def test_binder_environment_runs_every_notebook(tmp_path: Path) -> None:
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.12"
    assert "-e ." in (BINDER / "requirements.txt").read_text()
    python = _python312()
    if python is None:
        pytest.skip("no working python3.12 (PATH or ~/.pyenv/versions/3.12*)")
    venv_python = _binder_venv(python)
    check = subprocess.run([str(venv_python), "-m", "pip", "check"], capture_output=True,
                           text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    notebooks = sorted(str(p) for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert len(notebooks) >= 6
    work = tmp_path / "work"
    work.mkdir()
    # a clean Jupyter/nbtunnel home: only the venv's own kernelspec, no configured edge
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JUPYTER", "NBTUNNEL", "PYTHON", "VIRTUAL_ENV"))}
    env.update(JUPYTER_DATA_DIR=str(tmp_path / "jupyter"), NBTUNNEL_HOME=str(tmp_path / "home"),
               NBTUNNEL_HTTP_PORT="0", IPYTHONDIR=str(tmp_path / "ipython"),
               NBTUNNEL_EDGE="local")  # pinned: the default `auto` would try the network
    proc = subprocess.run([str(venv_python), "-c", DRIVER, str(work), *notebooks], env=env,
                          cwd=work, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-6000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(report)
    assert report["python"].startswith("3.12")
    assert Path(report["kernel"]).resolve().is_relative_to(VENV.resolve())  # the venv's kernel
    assert set(report["notebooks"]) == {Path(p).name for p in notebooks}
