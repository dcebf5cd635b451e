"""Schema migrations for the PostgreSQL store, numbered like the SQLite ones (`migrations.py`).

`nbtunnel_schema.version` records how many have run. Edges that start at the same moment take
a transaction-scoped advisory lock first, so exactly one of them migrates and the others see
the result. Migration 3 adds the triggers behind the change notifications that keep every
edge's in-memory route and tunnel cache current (`pg_cache.py`).
"""

from __future__ import annotations

from typing import Any

NOTIFY_CHANNEL = "nbtunnel_changes"
_LOCK_KEY = 0x6E62746E  # "nbtn": the advisory lock that serialises migrations

MIGRATIONS: list[str] = [
    # 1: tunnels and routes (the quick-tunnel edge)
    """
    CREATE TABLE IF NOT EXISTS tunnels (
        id uuid PRIMARY KEY,
        account_tag text NOT NULL,
        secret bytea NOT NULL,
        name text NOT NULL,
        kind text NOT NULL,
        created_at double precision NOT NULL,
        deleted_at double precision
    );
    CREATE TABLE IF NOT EXISTS routes (
        hostname text PRIMARY KEY,
        tunnel_id uuid NOT NULL REFERENCES tunnels(id),
        created_at double precision NOT NULL
    );
    CREATE INDEX IF NOT EXISTS routes_by_tunnel ON routes(tunnel_id);
    """,
    # 2: the control plane: accounts, API tokens (hashed), configurations, local configs;
    # a named tunnel's name is unique per account among live tunnels (decided by the index,
    # so two edges cannot both create it)
    """
    CREATE TABLE IF NOT EXISTS accounts (
        tag text PRIMARY KEY,
        name text NOT NULL UNIQUE,
        created_at double precision NOT NULL
    );
    CREATE TABLE IF NOT EXISTS api_tokens (
        id uuid PRIMARY KEY,
        account_tag text NOT NULL REFERENCES accounts(tag),
        token_hash bytea NOT NULL UNIQUE,
        name text NOT NULL,
        created_at double precision NOT NULL,
        revoked_at double precision
    );
    CREATE TABLE IF NOT EXISTS configurations (
        tunnel_id uuid NOT NULL,
        version integer NOT NULL,
        config text NOT NULL,
        status text NOT NULL,
        detail text NOT NULL DEFAULT '',
        created_at double precision NOT NULL,
        PRIMARY KEY (tunnel_id, version)
    );
    CREATE TABLE IF NOT EXISTS local_configs (
        tunnel_id uuid NOT NULL,
        connector_id uuid NOT NULL,
        config text NOT NULL,
        reported_at double precision NOT NULL,
        PRIMARY KEY (tunnel_id, connector_id)
    );
    CREATE INDEX IF NOT EXISTS tunnels_by_account ON tunnels(account_tag, name);
    CREATE UNIQUE INDEX IF NOT EXISTS named_tunnels_unique ON tunnels(account_tag, name)
        WHERE kind = 'named' AND deleted_at IS NULL;
    """,
    # 3: change notifications for the edges' caches: the changed key, never a secret
    f"""
    CREATE OR REPLACE FUNCTION nbtunnel_notify_change() RETURNS trigger AS $$
    DECLARE
        row_key text;
    BEGIN
        IF TG_TABLE_NAME = 'routes' THEN
            row_key := COALESCE(NEW.hostname, OLD.hostname);
        ELSE
            row_key := COALESCE(NEW.id, OLD.id)::text;
        END IF;
        PERFORM pg_notify('{NOTIFY_CHANNEL}', TG_TABLE_NAME || ' ' || row_key);
        RETURN NULL;
    END;
    $$ LANGUAGE plpgsql;
    DROP TRIGGER IF EXISTS routes_notify ON routes;
    CREATE TRIGGER routes_notify AFTER INSERT OR UPDATE OR DELETE ON routes
        FOR EACH ROW EXECUTE FUNCTION nbtunnel_notify_change();
    DROP TRIGGER IF EXISTS tunnels_notify ON tunnels;
    CREATE TRIGGER tunnels_notify AFTER INSERT OR UPDATE OR DELETE ON tunnels
        FOR EACH ROW EXECUTE FUNCTION nbtunnel_notify_change();
    """,
]


async def migrate(conn: Any) -> int:
    """Apply the migrations this database has not seen (`conn`: a psycopg AsyncConnection
    in autocommit mode); returns the resulting version."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        await conn.execute("CREATE TABLE IF NOT EXISTS nbtunnel_schema (version integer NOT NULL)")
        cur = await conn.execute("SELECT version FROM nbtunnel_schema")
        row = await cur.fetchone()
        if row is None:
            await conn.execute("INSERT INTO nbtunnel_schema (version) VALUES (0)")
            version = 0
        else:
            version = int(row[0])
        for number, script in enumerate(MIGRATIONS, start=1):
            if number <= version:
                continue
            await conn.execute(script)
            await conn.execute("UPDATE nbtunnel_schema SET version = %s", (number,))
            version = number
    return version
