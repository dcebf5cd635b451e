"""The control-plane API under `/api/v1`: tunnels, routes and configurations per account.

Served by the edge's API dispatcher (`api.py`) on the API hostnames. Every call but the
OpenAPI document needs `Authorization: Bearer <token>`; a token sees only its own account, and
another account's tunnel answers 404 exactly like a missing one (no existence oracle).
Configurations are versioned in the store and pushed to the live connectors
(`config_push.py`); a connector that refuses one makes the PUT fail with its error.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from nbtunnel.core.credentials import Credentials
from nbtunnel.edge.api_json import (
    Answer,
    ApiError,
    check_fields,
    check_remote_config,
    fail,
    ok,
    parse_body,
)
from nbtunnel.edge.config_push import PushResult, push_configuration
from nbtunnel.edge.openapi import openapi_document
from nbtunnel.edge.presence import Presence
from nbtunnel.edge.registry import LiveConnection, Registry
from nbtunnel.edge.stores.base import (
    AccountRecord,
    ControlStore,
    RouteConflict,
    StoreError,
    StoreUnavailable,
    TunnelRecord,
)

if TYPE_CHECKING:
    from nbtunnel.edge.front import Request

log = logging.getLogger("nbtunnel.edge.rest_api")

PREFIX = "/api/v1"
_HOSTNAME = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*"
                       r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["false"])[-1].lower() in ("1", "true", "yes")


class ControlApi:
    """Dispatch `/api/v1/...`; owns the tasks that push configurations to new connections."""

    def __init__(self, store: ControlStore, registry: Registry, *, domain: str,
                 presence: Presence | None = None) -> None:
        self.store = store
        self.registry = registry
        self.domain = domain
        self.presence = presence or Presence()  # other edges' connections (presence.py)
        self._tasks: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __call__(self, req: Request, body: bytes) -> Answer:
        try:
            return await self._dispatch(req, body)
        except ApiError as exc:
            return fail(exc)
        except StoreUnavailable as exc:
            log.warning("API %s %s: %s", req.method, req.target.partition("?")[0], exc)
            return fail(ApiError(503, "the control-plane store is unavailable; retry later"))
        except StoreError as exc:
            return fail(ApiError(409, str(exc)))

    async def _dispatch(self, req: Request, body: bytes) -> Answer:
        path, _, qs = req.target.partition("?")
        query = parse_qs(qs)
        parts = [unquote(p) for p in path[len(PREFIX):].strip("/").split("/") if p]
        method = req.method
        if parts == ["openapi.json"] and method in ("GET", "HEAD"):
            return ok(openapi_document())  # the document is public, like /ca.pem
        account = await self._authenticate(req)
        route = (method, *parts[:1], *(["{id}"] if len(parts) > 1 else []), *parts[2:])
        if route == ("GET", "account"):
            return ok({"tag": account.tag, "name": account.name})
        if route == ("GET", "tunnels"):
            return await self.list_tunnels(account, query)
        if route == ("POST", "tunnels"):
            return await self.create_tunnel(account, parse_body(body))
        if route[1:2] == ("tunnels",) and len(parts) >= 2:
            tunnel = await self._tunnel(account, parts[1])
            sub = parts[2:]
            if method == "GET" and not sub:
                return ok(await self.describe_everywhere(tunnel))
            if method == "DELETE" and not sub:
                return await self.delete_tunnel(tunnel, _flag(query, "force"))
            if method == "POST" and sub == ["cleanup"]:
                return await self.cleanup(tunnel, parse_body(body, allow_empty=True))
            if method == "GET" and sub == ["token"]:
                return ok({"token": self._credentials(tunnel).to_token()})
            if method == "PUT" and sub == ["configurations"]:
                return await self.put_configuration(tunnel, parse_body(body))
            if method == "GET" and sub == ["configurations"]:
                return ok(await self.get_configuration(tunnel))
        if route == ("GET", "routes"):
            return await self.list_routes(account, query)
        if route == ("POST", "routes"):
            return await self.add_route(account, parse_body(body))
        if method == "DELETE" and len(parts) == 2 and parts[0] == "routes":
            return await self.delete_route(account, parts[1])
        raise ApiError(404, f"no API endpoint {method} {path}; see {PREFIX}/openapi.json")

    async def _authenticate(self, req: Request) -> AccountRecord:
        challenge = [(b"WWW-Authenticate", b'Bearer realm="nbtunnel"')]
        auth = next((v for n, v in req.headers if n.lower() == b"authorization"), None)
        if auth is None:
            raise ApiError(401, "missing Authorization: Bearer <API token> header", challenge)
        scheme, _, token = auth.decode("latin-1").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "the Authorization header must be 'Bearer <API token>'",
                           challenge)
        account = await self.store.authenticate(token.strip())
        if account is None:
            raise ApiError(401, "invalid or revoked API token", challenge)
        return account

    async def _tunnel(self, account: AccountRecord, ref: str) -> TunnelRecord:
        try:
            tid = uuid.UUID(ref)
        except ValueError:
            found = await self.store.find_tunnels(account.tag, name=ref)
            if not found:
                raise ApiError(404, f"no tunnel {ref!r} in this account") from None
            return found[0]
        tunnel = await self.store.lookup_tunnel(tid)
        if tunnel is None or tunnel.account_tag != account.tag or tunnel.kind != "named":
            raise ApiError(404, f"no tunnel {ref!r} in this account")
        return tunnel

    @staticmethod
    def _credentials(tunnel: TunnelRecord) -> Credentials:
        return Credentials(tunnel.account_tag, tunnel.id, tunnel.secret)

    # tunnels ------------------------------------------------------------------------------

    def describe(self, tunnel: TunnelRecord, *, connections: bool = True,
                 remote: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        live = [c.describe() for c in self.registry.connections(tunnel.id)] + (remote or [])
        doc: dict[str, Any] = {
            "id": str(tunnel.id), "name": tunnel.name, "account_tag": tunnel.account_tag,
            "created_at": _iso(tunnel.created_at), "deleted_at": _iso(tunnel.deleted_at),
            "status": "healthy" if live else "inactive",
            "routes": self.store.hostnames(tunnel.id),
        }
        if connections:
            doc["connections"] = live
        return doc

    async def describe_everywhere(self, tunnel: TunnelRecord) -> dict[str, Any]:
        """`describe` with the connections other edges hold."""
        return self.describe(tunnel, remote=await self.presence.remote_connections(tunnel.id))

    async def list_tunnels(self, account: AccountRecord,
                           query: dict[str, list[str]]) -> Answer:
        name = query.get("name", [None])[-1]
        deleted = _flag(query, "include_deleted") or _flag(query, "is_deleted")
        found = await self.store.find_tunnels(account.tag, name=name, include_deleted=deleted)
        return ok([await self.describe_everywhere(t) for t in found])

    async def create_tunnel(self, account: AccountRecord, doc: dict[str, Any]) -> Answer:
        check_fields(doc, required={"name": str}, optional={"tunnel_secret": str})
        name = doc["name"].strip()
        if not 1 <= len(name) <= 64 or not name.isprintable():
            raise ApiError(400, "name must be 1 to 64 printable characters")
        secret = None
        if "tunnel_secret" in doc:
            try:
                secret = base64.b64decode(doc["tunnel_secret"], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ApiError(400, "tunnel_secret must be standard base64") from exc
            if len(secret) < 32:
                raise ApiError(400, "tunnel_secret must decode to at least 32 bytes")
        try:
            tunnel = await self.store.create_tunnel(name, account_tag=account.tag,
                                                    secret=secret)
        except StoreError as exc:
            raise ApiError(409, str(exc)) from exc
        log.info("tunnel %s (%s) created for account %s", tunnel.id, name, account.name)
        creds = self._credentials(tunnel)
        result = self.describe(tunnel)
        result["credentials_file"] = json.loads(creds.to_file_json())
        result["token"] = creds.to_token()
        return ok(result, 201)

    async def delete_tunnel(self, tunnel: TunnelRecord, force: bool) -> Answer:
        live = [c for c in self.registry.connections(tunnel.id) if not c.transport.closed]
        remote = await self.presence.remote_connections(tunnel.id)
        if (live or remote) and not force:
            raise ApiError(409, f"tunnel {tunnel.name} has {len(live) + len(remote)} active "
                           "connection(s); stop its connectors first or delete with "
                           "force=true (-f)")
        await self.store.delete_tunnel(tunnel.id)
        closed = self.close_local(tunnel.id, None, "tunnel deleted")
        closed += await self.presence.close_remote(tunnel.id, None, "tunnel deleted")
        log.info("tunnel %s deleted (%d connection(s) closed)", tunnel.id, closed)
        return ok({"id": str(tunnel.id), "deleted": True, "closed_connections": closed})

    async def cleanup(self, tunnel: TunnelRecord, doc: dict[str, Any]) -> Answer:
        """Disconnect the tunnel's connectors (all, or one connector id), on every edge: stale
        entries go, live connectors reconnect."""
        check_fields(doc, required={}, optional={"connector_id": str})
        wanted = doc.get("connector_id")
        closed = self.close_local(tunnel.id, wanted, "cleaned up")
        closed += await self.presence.close_remote(tunnel.id, wanted, "cleaned up")
        return ok({"id": str(tunnel.id), "closed_connections": closed})

    def close_local(self, tunnel_id: uuid.UUID, connector_id: str | None, why: str) -> int:
        """Close this edge's connections of the tunnel (of one connector if given)."""
        closed = 0
        for conn in self.registry.connections(tunnel_id):
            if connector_id is None or str(conn.connector_id) == connector_id:
                self.registry.remove(conn)
                conn.transport.close(0, why)
                closed += 1
        return closed

    # routes -------------------------------------------------------------------------------

    async def list_routes(self, account: AccountRecord,
                          query: dict[str, list[str]]) -> Answer:
        tid = query.get("tunnel_id", [None])[-1]
        routes = [{"hostname": r.hostname, "tunnel_id": str(r.tunnel_id),
                   "created_at": _iso(r.created_at)}
                  for r in await self.store.routes(account.tag)]
        return ok([r for r in routes if tid is None or r["tunnel_id"] == tid])

    async def add_route(self, account: AccountRecord, doc: dict[str, Any]) -> Answer:
        check_fields(doc, required={"hostname": str, "tunnel_id": str},
                     optional={"overwrite": bool})
        hostname = doc["hostname"].strip().lower().rstrip(".")
        if len(hostname) > 253 or not _HOSTNAME.match(hostname):
            raise ApiError(400, f"invalid hostname {doc['hostname']!r} (no scheme, port or path)")
        tunnel = await self._tunnel(account, doc["tunnel_id"])
        try:  # one atomic decision in the store: two edges may race for the same hostname
            await self.store.claim_route(hostname, tunnel.id, account_tag=account.tag,
                                         overwrite=bool(doc.get("overwrite")))
        except RouteConflict as exc:
            raise ApiError(409, str(exc)) from exc
        return ok({"hostname": hostname, "tunnel_id": str(tunnel.id)}, 201)

    async def delete_route(self, account: AccountRecord, hostname: str) -> Answer:
        if not await self.store.remove_route(hostname, account_tag=account.tag):
            raise ApiError(404, f"no route for {hostname} in this account")
        return ok({"hostname": hostname.lower(), "deleted": True})

    # configurations -----------------------------------------------------------------------

    async def put_configuration(self, tunnel: TunnelRecord, doc: dict[str, Any]) -> Answer:
        check_fields(doc, required={"config": dict})
        check_remote_config(doc["config"])
        version = await self.store.add_configuration(tunnel.id, doc["config"])
        results = await self.push(tunnel.id, version, doc["config"])
        errors = [r for r in results if r.error]
        if errors:
            detail = "; ".join(f"connector {r.connector_id}: {r.error}" for r in errors)
            await self.store.set_configuration_status(tunnel.id, version, "rejected", detail)
            raise ApiError(422, f"configuration version {version} was rejected, the previous "
                           f"one stays: {detail}")
        await self.store.set_configuration_status(tunnel.id, version,
                                                  "applied" if results else "pending")
        return ok({"version": version, "config": doc["config"],
                   "pushed": [r.describe() for r in results]})

    async def push(self, tunnel_id: uuid.UUID, version: int,
                   config: dict[str, Any]) -> list[PushResult]:
        """One push per connector and edge (its first usable connection there); this edge's
        and, through presence, every other edge's holding the tunnel, all at once."""
        data = json.dumps(config, separators=(",", ":")).encode()
        local, remote = await asyncio.gather(self.push_local(tunnel_id, version, data),
                                             self.presence.push_remote(tunnel_id, version, data))
        return [PushResult(str(r.get("connector_id") or r.get("edge_id") or "?"),
                           int(r["conn_index"]), int(r["applied_version"]), r.get("error") or "")
                for r in [*local, *remote]]

    async def push_local(self, tunnel_id: uuid.UUID, version: int,
                         data: bytes) -> list[dict[str, Any]]:
        targets: dict[uuid.UUID, LiveConnection] = {}
        for conn in self.registry.connections(tunnel_id):
            if not conn.draining and not conn.transport.closed:
                targets.setdefault(conn.connector_id, conn)
        results = await asyncio.gather(
            *(push_configuration(c, version, data) for c in targets.values()))
        return [r.describe() for r in results]

    async def get_configuration(self, tunnel: TunnelRecord) -> dict[str, Any]:
        await self.persist_local_configs(tunnel.id)
        rec = await self.store.configuration(tunnel.id)
        local = {}
        for connector, text in (await self.store.local_configs(tunnel.id)).items():
            try:
                local[connector] = json.loads(text)
            except ValueError:
                local[connector] = text
        return {"tunnel_id": str(tunnel.id), "version": rec.version if rec else 0,
                "config": rec.config if rec else None, "status": rec.status if rec else None,
                "local": local}

    async def persist_local_configs(self, tunnel_id: uuid.UUID) -> None:
        """Store what connectors reported with updateLocalConfiguration."""
        for conn in self.registry.connections(tunnel_id):
            if conn.local_config is not None:
                await self.store.save_local_config(tunnel_id, conn.connector_id,
                                                   conn.local_config)

    def on_connection_change(self, state: str, live: LiveConnection) -> None:
        """ControlHandler hook: push the current configuration to a new connection; keep
        local configurations when a connection closes."""
        if state == "closed" and live.local_config is not None:
            self._spawn(self._save_local(live))
        if state == "registered":
            self._spawn(self._push_current(live))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _save_local(self, live: LiveConnection) -> None:
        if live.local_config is None:
            return
        try:
            await self.store.save_local_config(live.tunnel_id, live.connector_id,
                                               live.local_config)
        except StoreError as exc:
            log.warning("could not keep the local configuration of %s: %s",
                        live.connector_id, exc)

    async def _push_current(self, live: LiveConnection) -> None:
        try:
            rec = await self.store.configuration(live.tunnel_id)
        except StoreError as exc:
            log.warning("no configuration for %s: %s", live.tunnel_id, exc)
            return
        if rec is None:
            return
        version, data = rec.version, json.dumps(rec.config, separators=(",", ":")).encode()
        result = await push_configuration(live, version, data)
        if result.error:
            log.warning("connector %s refused configuration %d: %s", live.connector_id,
                        version, result.error)
