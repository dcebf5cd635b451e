"""A tiny timed HTTP client for lab experiments (stdlib only, so it runs on any thread)."""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class LabResponse:
    """What a public client saw: status, headers, body, wall time, and the edge's ray id."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    elapsed: float

    @property
    def ray(self) -> str:
        return self.header("cf-ray")

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def http_request(address: tuple[str, int], host: str, path: str, method: str, body: bytes,
                 headers: dict[str, str], timeout: float) -> LabResponse:
    """One request on a fresh connection, with ``Host`` set to the tunnel's hostname."""
    conn = http.client.HTTPConnection(address[0], address[1], timeout=timeout)
    start = time.perf_counter()
    try:
        conn.request(method, path, body=body or None, headers={"Host": host, **headers})
        resp = conn.getresponse()
        data = resp.read()
        return LabResponse(resp.status, list(resp.getheaders()), data,
                           time.perf_counter() - start)
    finally:
        conn.close()
