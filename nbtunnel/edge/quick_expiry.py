"""Idle quick tunnels expire: anyone may create one, so none may live forever.

A quick tunnel that has had no live connection for `idle` seconds (default one hour) is deleted
with its secret and hostname; its connector, if it comes back, is refused `Tunnel not found`
and a new quick tunnel must be requested (trycloudflare's tunnels do not outlive their
connector either). Tunnels created before this edge started get a full period from the start.
"""

from __future__ import annotations

import logging
import uuid

from nbtunnel.edge.clock import Clock
from nbtunnel.edge.presence import Presence
from nbtunnel.edge.registry import Registry
from nbtunnel.edge.stores.base import ControlStore

log = logging.getLogger("nbtunnel.edge.quick_expiry")

QUICK_TUNNEL_IDLE_EXPIRY = 3600.0
MAX_SWEEP_INTERVAL = 60.0


class QuickTunnelExpiry:
    """Sweeps the store every `interval` seconds; run() until cancelled by its owner (Edge)."""

    def __init__(self, store: ControlStore, registry: Registry, *, idle: float,
                 clock: Clock, presence: Presence | None = None) -> None:
        if idle <= 0:
            raise ValueError("idle must be positive")
        self.store = store
        self.registry = registry
        self.idle = idle
        self.clock = clock
        self.presence = presence  # several edges: a tunnel held by another one is not idle
        self.interval = min(MAX_SWEEP_INTERVAL, idle / 4)
        self.started = clock.time()
        self.sweeps = 0

    async def run(self) -> None:
        while True:
            await self.clock.sleep(self.interval)
            try:
                await self.sweep()
            except Exception:  # a store error must not end expiry for good
                log.exception("quick tunnel expiry sweep failed")
            self.sweeps += 1

    async def sweep(self) -> list[uuid.UUID]:
        """Delete every quick tunnel idle for `idle` seconds or more; returns their ids."""
        now = self.clock.time()
        expired = []
        for tunnel in self.store.tunnels():
            if tunnel.kind != "quick" or self.registry.connections(tunnel.id):
                continue
            if self.presence is not None and await self.presence.edges_for(tunnel.id):
                continue
            since = self.registry.idle_since(tunnel.id)
            if since is None:  # never connected since this edge started
                since = max(tunnel.created_at, self.started)
            if now - since >= self.idle:
                await self.store.purge_tunnel(tunnel.id)
                self.registry.forget(tunnel.id)
                expired.append(tunnel.id)
        if expired:
            log.info("deleted %d quick tunnel(s) without a connection for %gs", len(expired),
                     self.idle)
        return expired
