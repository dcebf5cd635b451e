"""The embedded default: the SQLite store (`edge/store.py`) behind the async interface.

SQLite calls take microseconds on a local file, so they run inline on the loop, as they always
did; routes and tunnels are mirrored in memory by `Store` itself. One SQLite file serves one
edge process: several edges or `--workers` need `--store postgresql://...`.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from nbtunnel.edge.clock import Clock
from nbtunnel.edge.store import Store
from nbtunnel.edge.stores.base import (
    AccountRecord,
    ConfigRecord,
    ControlStore,
    HostnameTaken,
    RouteRecord,
    StoreLatency,
    TunnelRecord,
    route_conflict,
)


class SqliteStore(ControlStore):
    """`ControlStore` over one SQLite file (or `:memory:`)."""

    backend = "sqlite"

    def __init__(self, path: Path | str = ":memory:", *, clock: Clock | None = None) -> None:
        self.db = Store(path, clock=clock)
        self.latency = StoreLatency()

    @property
    def schema_version(self) -> int:
        return self.db.schema_version

    async def start(self) -> None:
        pass  # opened and migrated in __init__; routes are already in memory

    async def aclose(self) -> None:
        self.db.close()

    def resolve(self, hostname: str) -> uuid.UUID | None:
        return self.db.resolve(hostname)

    def get_tunnel(self, tunnel_id: uuid.UUID) -> TunnelRecord | None:
        return self.db.get_tunnel(tunnel_id)

    def tunnels(self) -> list[TunnelRecord]:
        return self.db.tunnels()

    def hostnames(self, tunnel_id: uuid.UUID) -> list[str]:
        return self.db.hostnames(tunnel_id)

    def hostname_taken(self, hostname: str) -> bool:
        return self.db.hostname_taken(hostname)

    async def create_tunnel(
        self, name: str, *, account_tag: str, kind: str = "named",
        secret: bytes | None = None, tunnel_id: uuid.UUID | None = None,
    ) -> TunnelRecord:
        with self.latency.timed():
            return self.db.create_tunnel(name, account_tag=account_tag, kind=kind,
                                         secret=secret, tunnel_id=tunnel_id)

    async def create_quick_tunnel(self, hostname: str, *, account_tag: str) -> TunnelRecord:
        with self.latency.timed():
            rec = self.db.create_quick_tunnel(hostname, account_tag=account_tag)
        if rec is None:
            raise HostnameTaken(f"hostname {hostname} is taken")
        return rec

    async def claim_route(self, hostname: str, tunnel_id: uuid.UUID, *, account_tag: str,
                          overwrite: bool = False) -> None:
        with self.latency.timed():
            owner = self.db.claim_route(hostname, tunnel_id, account_tag=account_tag,
                                        overwrite=overwrite)
        if owner is not None:
            raise route_conflict(hostname.lower(), owner, account_tag)

    async def add_route(self, hostname: str, tunnel_id: uuid.UUID) -> None:
        with self.latency.timed():
            self.db.add_route(hostname, tunnel_id)

    async def remove_route(self, hostname: str, *, account_tag: str | None = None) -> bool:
        with self.latency.timed():
            return self.db.remove_route(hostname, account_tag=account_tag)

    async def routes(self, account_tag: str) -> list[RouteRecord]:
        with self.latency.timed():
            return self.db.routes(account_tag)

    async def find_tunnels(self, account_tag: str, *, name: str | None = None,
                           include_deleted: bool = False) -> list[TunnelRecord]:
        with self.latency.timed():
            return self.db.find_tunnels(account_tag, name=name, include_deleted=include_deleted)

    async def delete_tunnel(self, tunnel_id: uuid.UUID) -> None:
        with self.latency.timed():
            self.db.delete_tunnel(tunnel_id)

    async def purge_tunnel(self, tunnel_id: uuid.UUID) -> None:
        with self.latency.timed():
            self.db.purge_tunnel(tunnel_id)

    async def create_account(self, name: str) -> AccountRecord:
        with self.latency.timed():
            return self.db.create_account(name)

    async def account(self, *, tag: str | None = None,
                      name: str | None = None) -> AccountRecord | None:
        with self.latency.timed():
            return self.db.account(tag=tag, name=name)

    async def accounts(self) -> list[AccountRecord]:
        with self.latency.timed():
            return self.db.accounts()

    async def create_api_token(self, account_tag: str, name: str = "token") -> str:
        with self.latency.timed():
            return self.db.create_api_token(account_tag, name)

    async def authenticate(self, token: str) -> AccountRecord | None:
        with self.latency.timed():
            return self.db.authenticate(token)

    async def add_configuration(self, tunnel_id: uuid.UUID, config: dict[str, object]) -> int:
        with self.latency.timed():
            return self.db.add_configuration(tunnel_id, config)

    async def set_configuration_status(self, tunnel_id: uuid.UUID, version: int, status: str,
                                       detail: str = "") -> None:
        with self.latency.timed():
            self.db.set_configuration_status(tunnel_id, version, status, detail)

    async def configuration(self, tunnel_id: uuid.UUID) -> ConfigRecord | None:
        with self.latency.timed():
            return self.db.configuration(tunnel_id)

    async def save_local_config(self, tunnel_id: uuid.UUID, connector_id: uuid.UUID,
                                config: bytes) -> None:
        with self.latency.timed():
            self.db.save_local_config(tunnel_id, connector_id, config)

    async def local_configs(self, tunnel_id: uuid.UUID) -> dict[str, str]:
        with self.latency.timed():
            return self.db.local_configs(tunnel_id)

