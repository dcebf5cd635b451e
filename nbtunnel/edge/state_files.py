"""The edge's state directory holds every tunnel secret: it is owner-only (0700), its files
0600, and ones found readable by others are narrowed (and logged) on start. `holds_tunnel`
reads the database without the edge, for `tunnel run` to pick the edge that issued a token.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import uuid
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700

log = logging.getLogger("nbtunnel.edge.store")


def make_private(path: Path, mode: int) -> None:
    """Narrow an existing file or directory to ``mode`` if others may access it (logged)."""
    try:
        current = path.stat().st_mode & 0o777
    except FileNotFoundError:
        return
    if current & 0o077:
        os.chmod(path, mode)
        log.warning("%s was mode %o (readable by others); changed to %o", path, current, mode)


def private_dir(path: Path) -> None:
    """Create ``path`` (and parents) owner-only, or narrow an existing one."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    make_private(path, PRIVATE_DIR_MODE)


def private_database(path: Path) -> None:
    """Create the database file 0600 before SQLite does, narrow old ones and their journals."""
    private_dir(path.parent)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE))
    for suffix in ("", "-wal", "-shm", "-journal"):
        make_private(path.with_name(path.name + suffix), PRIVATE_FILE_MODE)


def holds_tunnel(path: Path, tunnel_id: uuid.UUID) -> bool | None:
    """Whether the edge database at `path` has the live tunnel `tunnel_id`, read without
    creating or migrating anything (None when it cannot tell: no file, another schema). Lets
    `tunnel run` send a token to the edge that issued it."""
    if not path.is_file():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT 1 FROM tunnels WHERE id = ? AND deleted_at IS NULL",
                             (str(tunnel_id),)).fetchone()
    except sqlite3.Error:
        return None
    finally:  # a WAL reader may create -shm/-wal with the umask's mode: owner-only, quietly
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.chmod(path.with_name(path.name + suffix), PRIVATE_FILE_MODE)
    return row is not None
