"""Control-plane store backends behind one interface (`base.ControlStore`).

`open_store(spec, state_dir)`: no spec (or `sqlite`, or a file path) is the embedded SQLite file
in the state directory; `postgresql://...` is a database shared by several edges.
"""

from __future__ import annotations

from pathlib import Path

from nbtunnel.edge.clock import Clock
from nbtunnel.edge.stores.base import ControlStore, StoreError

SQLITE_FILE = "edge.sqlite3"


def open_store(spec: str | None, state_dir: Path, *, clock: Clock | None = None) -> ControlStore:
    """The store named by `--store` (not started yet: `await store.start()`); `clock` dates
    records (tests inject theirs)."""
    if spec and spec.startswith(("postgresql://", "postgres://")):
        from nbtunnel.edge.stores.postgres import PostgresStore

        return PostgresStore(spec, clock=clock)
    if spec and "://" in spec and not spec.startswith("sqlite://"):
        raise StoreError(f"unsupported --store {spec.split('://')[0]}://...; use "
                         "postgresql://USER@HOST/DB or a SQLite file path")
    from nbtunnel.edge.stores.sqlite import SqliteStore

    if not spec or spec == "sqlite":
        return SqliteStore(state_dir / SQLITE_FILE, clock=clock)
    return SqliteStore(Path(spec.removeprefix("sqlite://")), clock=clock)


__all__ = ["ControlStore", "StoreError", "open_store"]
