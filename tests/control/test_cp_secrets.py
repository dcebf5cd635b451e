"""Secrets at rest and in output: the edge's state is owner-only and the admin token's value is
never printed (issue 9, finding 7)."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
import sys
from pathlib import Path

import pytest

from nbtunnel.connector.quick import request_quick_tunnel
from nbtunnel.edge.server import Edge
from tests.control.conftest import edge_config


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def usual_umask() -> object:
    """The umask most systems run with: files 0644, directories 0755 unless we say otherwise."""
    old = os.umask(0o022)
    yield
    os.umask(old)


async def test_state_files_are_created_owner_only(tmp_path: Path) -> None:
    state = tmp_path / "edge"
    async with Edge(edge_config(state)) as edge:
        await request_quick_tunnel(edge.api_url)  # a secret is written: -wal and -shm exist
        files = {p.name: _mode(p) for p in state.iterdir()}
    assert _mode(state) == 0o700
    for name in ("edge.sqlite3", "edge.sqlite3-wal", "edge.sqlite3-shm", "ca-key.pem",
                 "edge-key.pem"):
        assert files.pop(name) == 0o600, name
    assert all(mode & 0o077 == 0 or name.endswith(".pem") for name, mode in files.items())


async def test_existing_state_readable_by_others_is_narrowed_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "edge"
    state.mkdir(mode=0o755)
    db = state / "edge.sqlite3"
    sqlite3.connect(db).close()
    for path in (db, db.with_name("edge.sqlite3-wal")):
        path.touch()
        path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="nbtunnel.edge.store"):
        async with Edge(edge_config(state)):
            pass
    assert _mode(state) == 0o700 and _mode(db) == 0o600  # (SQLite removes the -wal on close)
    narrowed = [r.getMessage() for r in caplog.records if "changed to 600" in r.getMessage()]
    for path in (db, db.with_name("edge.sqlite3-wal")):
        assert any(m.startswith(f"{path} was mode 644") for m in narrowed), path
    assert any("changed to 700" in r.getMessage() for r in caplog.records)


async def test_edge_shows_the_admin_token_path_never_its_value(tmp_path: Path) -> None:
    state = tmp_path / "edge"
    env = {**os.environ, "NBTUNNEL_HOME": str(tmp_path / "home")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nbtunnel", "edge", "--state-dir", str(state),
        "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out = b""
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            while b"nbtunnel edge is running" not in out:
                line = await proc.stdout.readline()
                assert line, out.decode()
                out += line
    finally:
        proc.terminate()
        rest, _ = await asyncio.wait_for(proc.communicate(), 30)
        out += rest
    token = (state / "admin-token").read_text().strip()
    text = out.decode()
    assert token and token not in text
    assert str(state / "admin-token") in text
    assert _mode(state / "admin-token") == 0o600
