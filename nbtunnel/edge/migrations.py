"""Schema migrations for the edge store, applied in order on open.

`PRAGMA user_version` records how many have run, so an old state directory is upgraded in
place at start and a new one is built by the same path (one code path, tested by both).
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[str] = [
    # 1: tunnels and routes (the quick-tunnel edge)
    """
    CREATE TABLE IF NOT EXISTS tunnels (
        id TEXT PRIMARY KEY,
        account_tag TEXT NOT NULL,
        secret BLOB NOT NULL,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        created_at REAL NOT NULL,
        deleted_at REAL
    );
    CREATE TABLE IF NOT EXISTS routes (
        hostname TEXT PRIMARY KEY,
        tunnel_id TEXT NOT NULL REFERENCES tunnels(id),
        created_at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS routes_by_tunnel ON routes(tunnel_id);
    """,
    # 2: the control plane: accounts, API tokens (hashed), configurations, local configs
    """
    CREATE TABLE IF NOT EXISTS accounts (
        tag TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS api_tokens (
        id TEXT PRIMARY KEY,
        account_tag TEXT NOT NULL REFERENCES accounts(tag),
        token_hash BLOB NOT NULL UNIQUE,
        name TEXT NOT NULL,
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE TABLE IF NOT EXISTS configurations (
        tunnel_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        config TEXT NOT NULL,
        status TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        PRIMARY KEY (tunnel_id, version)
    );
    CREATE TABLE IF NOT EXISTS local_configs (
        tunnel_id TEXT NOT NULL,
        connector_id TEXT NOT NULL,
        config TEXT NOT NULL,
        reported_at REAL NOT NULL,
        PRIMARY KEY (tunnel_id, connector_id)
    );
    CREATE INDEX IF NOT EXISTS tunnels_by_account ON tunnels(account_tag, name);
    """,
]


def migrate(db: sqlite3.Connection) -> int:
    """Apply the migrations this database has not seen; returns the resulting version."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    for number, script in enumerate(MIGRATIONS, start=1):
        if number <= version:
            continue
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in script.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        version = number
    return version
