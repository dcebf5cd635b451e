"""What went through a tunnel and how to reach it from Python: the inspector's captures,
replay, failed logins, and `get()` (Python's HTTP clients cannot resolve `*.localhost`).

A mixin of `Tunnel`, kept apart so `tunnel.py` stays about the lifecycle.
"""

from __future__ import annotations

import asyncio
import http.client
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbtunnel.api.errors import TunnelError

if TYPE_CHECKING:  # pragma: no cover
    from nbtunnel.api.options import TunnelOptions
    from nbtunnel.api.runtime import Runtime
    from nbtunnel.connector.inspector import Capture


@dataclass(frozen=True)
class Reply:
    """A response fetched with `Tunnel.get`."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> Any:
        import json

        return json.loads(self.body)


class TrafficMixin:
    """Needs `_connector`, `_runtime`, `front`, `hostname`, `options` from `Tunnel`."""

    _connector: Any
    _runtime: Runtime
    front: tuple[str, int]
    hostname: str
    options: TunnelOptions

    @property
    def requests(self) -> list[Capture]:
        """The last requests (oldest first): method, target, status, duration, sizes, time,
        masked headers and the first KiBs of each body. Empty with inspect=False."""
        guard = self._connector.guard
        if guard is None or guard.inspector is None:
            return []
        return guard.inspector.captures()

    @property
    def refused(self) -> int:
        """Requests refused by --auth (401) since the tunnel opened."""
        guard = self._connector.guard
        return guard.access.refused if guard is not None and guard.access is not None else 0

    @property
    def auth_kind(self) -> str | None:
        """"basic", "token" or None (no --auth)."""
        guard = self._connector.guard
        return guard.access.spec.kind if guard is not None and guard.access is not None else None

    async def areplay(self, capture_id: int) -> Capture:
        """Send captured request #capture_id to the origin again; the new capture (also in
        `requests`, with replay_of set)."""
        guard = self._connector.guard
        if guard is None or guard.inspector is None:
            raise TunnelError("this tunnel keeps no requests (opened with inspect=False)")
        if not self._runtime.on_loop_thread:
            fut = self._runtime.submit(self.areplay(capture_id))
            return await asyncio.wrap_future(fut)
        from nbtunnel.connector.origin import OriginError

        rule = self._connector.ingress.rules[0].origin
        try:
            return await guard.replay(capture_id, http_host_header=rule.http_host_header,
                                      no_tls_verify=rule.no_tls_verify)
        except OriginError as exc:
            raise TunnelError(f"replay of request #{capture_id} failed: {exc}") from exc

    def replay(self, capture_id: int) -> Capture:
        return self._runtime.call(self.areplay(capture_id))

    def get(self, path: str = "/", *, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 30.0) -> Reply:
        """Request `path` through the tunnel from Python: connects to the edge's public front
        and sends `Host: <tunnel hostname>` (what a browser does for `t.url`). With
        `--auth`, pass the credentials in `headers`."""
        conn = http.client.HTTPConnection(self.front[0], self.front[1], timeout=timeout)
        try:
            conn.request(method, path, body=body,
                         headers={"Host": self.hostname + ("" if self.front[1] == 80 else
                                                           f":{self.front[1]}"),
                                  **(headers or {})})
            resp = conn.getresponse()
            return Reply(resp.status, resp.getheaders(), resp.read())
        finally:
            conn.close()
