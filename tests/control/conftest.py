"""Fixtures for control-plane tests: an edge with two accounts, an API helper, an origin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nbtunnel.edge.bootstrap import create_token, ensure_admin_token
from nbtunnel.edge.server import Edge, EdgeConfig
from tests.e2e.conftest import client, origin  # noqa: F401 - fixtures reused here


@dataclass
class Api:
    """Calls `/api/v1` with one account's token; returns (status, decoded envelope)."""

    session: aiohttp.ClientSession
    base: str
    token: str

    async def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                   token: str | None = None, query: dict[str, str] | None = None
                   ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {self.token if token is None else token}"}
        data = raw if raw is not None else (None if body is None else
                                            __import__("json").dumps(body).encode())
        async with self.session.request(method, f"{self.base}/api/v1{path}", data=data,
                                        headers=headers, params=query) as resp:
            return resp.status, await resp.json(content_type=None)

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, doc = await self.call(method, path, body, **kw)
        assert status in (200, 201) and doc["success"], (status, doc)
        return doc["result"]


def edge_config(state: Path) -> EdgeConfig:
    return EdgeConfig(state_dir=state, quic_port=0, http_port=0)


@pytest.fixture
async def cp_edge(tmp_path: Path) -> AsyncIterator[Edge]:
    async with Edge(edge_config(tmp_path / "edge")) as e:
        yield e


@pytest.fixture
async def api(cp_edge: Edge, tmp_path: Path) -> AsyncIterator[Api]:
    assert cp_edge.store is not None
    _, token = await ensure_admin_token(cp_edge.store, tmp_path / "edge")
    assert token is not None
    async with aiohttp.ClientSession() as s:
        yield Api(s, cp_edge.api_url, token)


@pytest.fixture
async def other_api(cp_edge: Edge, api: Api) -> Api:
    assert cp_edge.store is not None
    return Api(api.session, api.base, await create_token(cp_edge.store, "other"))
