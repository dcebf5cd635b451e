"""The control-plane store as one interface, whatever holds it (SQLite or PostgreSQL).

Two kinds of calls, on purpose:
- lookups on the request and registration paths (`resolve`, `get_tunnel`, `hostnames`...) are
  synchronous and answered from memory, so a visitor's request never waits on a database;
- everything else (the API, the CLI, bootstrap) is `async` and goes to the database.

Check-then-act decisions that two edges could race on (a hostname claimed by two accounts, a
quick-tunnel hostname, a configuration version) are single store calls that the database
decides atomically, never a cache lookup followed by a write.
"""

from __future__ import annotations

import abc
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from nbtunnel.edge.store import (
    AccountRecord,
    ConfigRecord,
    RouteRecord,
    StoreError,
    TunnelRecord,
)

__all__ = [
    "AccountRecord",
    "ConfigRecord",
    "ControlStore",
    "HostnameTaken",
    "RouteConflict",
    "RouteRecord",
    "StoreError",
    "StoreLatency",
    "StoreUnavailable",
    "TunnelRecord",
    "route_conflict",
]


class RouteConflict(StoreError):
    """The hostname is routed to another tunnel (of this account, or of another one)."""

    def __init__(self, message: str, *, other_account: bool) -> None:
        super().__init__(message)
        self.other_account = other_account


def route_conflict(hostname: str, owner: TunnelRecord, account_tag: str) -> RouteConflict:
    """The API's 409 text for a refused claim (the same for every backend)."""
    if owner.account_tag != account_tag:
        return RouteConflict(f"hostname {hostname} belongs to another account",
                             other_account=True)
    return RouteConflict(f"hostname {hostname} is already routed to tunnel {owner.name} "
                         f"({owner.id}); set overwrite=true to move it", other_account=False)


class StoreUnavailable(StoreError):
    """The database cannot be reached (the API answers 503; requests keep being routed)."""


class HostnameTaken(StoreError):
    """A quick-tunnel hostname was already taken (the caller draws another one)."""


@dataclass
class StoreLatency:
    """Count and total time of database calls, for `/metrics` (no histogram library)."""

    calls: int = 0
    seconds: float = 0.0
    errors: int = 0
    buckets: dict[float, int] = field(
        default_factory=lambda: dict.fromkeys((0.001, 0.005, 0.025, 0.1, 0.5, 2.5), 0))

    @contextmanager
    def timed(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        except BaseException:
            self.errors += 1
            raise
        finally:
            spent = time.perf_counter() - start
            self.calls += 1
            self.seconds += spent
            for bound in self.buckets:
                if spent <= bound:
                    self.buckets[bound] += 1


class ControlStore(abc.ABC):
    """Tunnels, routes, accounts, API tokens and configurations (see module docstring)."""

    backend: str = "?"
    latency: StoreLatency

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect, migrate and fill the in-memory caches."""

    @abc.abstractmethod
    async def aclose(self) -> None: ...

    # served from memory -----------------------------------------------------------------

    @abc.abstractmethod
    def resolve(self, hostname: str) -> uuid.UUID | None:
        """Tunnel id for a public hostname (no port, any case); no I/O."""

    @abc.abstractmethod
    def get_tunnel(self, tunnel_id: uuid.UUID) -> TunnelRecord | None:
        """A live (not deleted) tunnel from memory."""

    @abc.abstractmethod
    def tunnels(self) -> list[TunnelRecord]: ...

    @abc.abstractmethod
    def hostnames(self, tunnel_id: uuid.UUID) -> list[str]: ...

    @abc.abstractmethod
    def hostname_taken(self, hostname: str) -> bool: ...

    async def lookup_tunnel(self, tunnel_id: uuid.UUID) -> TunnelRecord | None:
        """Memory first, then the database: a tunnel created through another edge a moment
        ago may not have reached this edge's cache yet (registration, not the request path)."""
        return self.get_tunnel(tunnel_id)

    # tunnels and routes -----------------------------------------------------------------

    @abc.abstractmethod
    async def create_tunnel(
        self, name: str, *, account_tag: str, kind: str = "named",
        secret: bytes | None = None, tunnel_id: uuid.UUID | None = None,
    ) -> TunnelRecord: ...

    @abc.abstractmethod
    async def create_quick_tunnel(self, hostname: str, *, account_tag: str) -> TunnelRecord:
        """A quick tunnel and its route in one transaction; HostnameTaken if the name is
        already routed (anywhere in the deployment)."""

    @abc.abstractmethod
    async def claim_route(self, hostname: str, tunnel_id: uuid.UUID, *, account_tag: str,
                          overwrite: bool = False) -> None:
        """Route `hostname` to the tunnel, atomically: RouteConflict when another account
        owns it, or another tunnel of this account does and `overwrite` is false."""

    @abc.abstractmethod
    async def add_route(self, hostname: str, tunnel_id: uuid.UUID) -> None: ...

    @abc.abstractmethod
    async def remove_route(self, hostname: str, *, account_tag: str | None = None) -> bool:
        """Delete a route (only the account's own when `account_tag` is given); whether one
        was deleted."""

    @abc.abstractmethod
    async def routes(self, account_tag: str) -> list[RouteRecord]: ...

    @abc.abstractmethod
    async def find_tunnels(self, account_tag: str, *, name: str | None = None,
                           include_deleted: bool = False) -> list[TunnelRecord]: ...

    @abc.abstractmethod
    async def delete_tunnel(self, tunnel_id: uuid.UUID) -> None: ...

    @abc.abstractmethod
    async def purge_tunnel(self, tunnel_id: uuid.UUID) -> None:
        """Hard delete (expired quick tunnels): the record, its secret, routes and configs."""

    # accounts and API tokens ------------------------------------------------------------

    @abc.abstractmethod
    async def create_account(self, name: str) -> AccountRecord: ...

    @abc.abstractmethod
    async def account(self, *, tag: str | None = None,
                      name: str | None = None) -> AccountRecord | None: ...

    @abc.abstractmethod
    async def accounts(self) -> list[AccountRecord]: ...

    @abc.abstractmethod
    async def create_api_token(self, account_tag: str, name: str = "token") -> str: ...

    @abc.abstractmethod
    async def authenticate(self, token: str) -> AccountRecord | None: ...

    # configurations ---------------------------------------------------------------------

    @abc.abstractmethod
    async def add_configuration(self, tunnel_id: uuid.UUID, config: dict[str, object]) -> int:
        ...

    @abc.abstractmethod
    async def set_configuration_status(self, tunnel_id: uuid.UUID, version: int, status: str,
                                       detail: str = "") -> None: ...

    @abc.abstractmethod
    async def configuration(self, tunnel_id: uuid.UUID) -> ConfigRecord | None: ...

    @abc.abstractmethod
    async def save_local_config(self, tunnel_id: uuid.UUID, connector_id: uuid.UUID,
                                config: bytes) -> None: ...

    @abc.abstractmethod
    async def local_configs(self, tunnel_id: uuid.UUID) -> dict[str, str]: ...
