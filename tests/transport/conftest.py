"""Fixtures: one LocalCA per session, and backend parameters for every installed library."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the package may not be installed in the venv
    sys.path.insert(0, str(ROOT))

from nbtunnel.transport.tls import LocalCA  # noqa: E402

from .util import BACKENDS, PAIRS  # noqa: E402


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA.load_or_create(tmp_path_factory.mktemp("edge-ca"))


@pytest.fixture(params=PAIRS)
def pair(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(client backend, server backend)."""
    client, server = str(request.param).split("->")
    return client, server


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
