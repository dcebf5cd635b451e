"""The connector's StreamProxy on the in-memory pair, against a real origin on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from nbtunnel.connector.events import RequestEvent
from nbtunnel.connector.head_watch import HeadWatch
from nbtunnel.connector.ingress import Ingress
from nbtunnel.connector.origin import OriginClient
from nbtunnel.connector.proxy import StreamProxy
from nbtunnel.core.httpmeta import build_connect_request, parse_http_response
from nbtunnel.core.streams import ConnectionType, ConnectRequest
from nbtunnel.transport.errors import StreamResetError
from nbtunnel.transport.memory import MemoryConnection, MemoryStream, memory_pair
from tests.e2e.conftest import Origin, eventually, origin  # noqa: F401 - fixture reused here


@dataclass
class Proxied:
    """A StreamProxy serving the connector end of a memory pair; the test plays the edge."""

    edge: MemoryConnection
    connector: MemoryConnection
    proxy: StreamProxy
    events: list[RequestEvent] = field(default_factory=list)
    configs: list[tuple[int, bytes]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def open(self, req: ConnectRequest, *, end_stream: bool = True) -> MemoryStream:
        stream = self.edge.open_stream()
        await stream.send_request(req, end_stream=end_stream)
        peer = await self.connector.accept_stream()
        self.tasks.append(asyncio.get_running_loop().create_task(
            self.proxy.handle(peer, 0, self._on_config)))
        return stream

    def _on_config(self, version: int, config: bytes) -> tuple[int, str]:
        self.configs.append((version, config))
        return version, ""


@pytest.fixture
async def proxied(origin: Origin) -> AsyncIterator[Proxied]:  # noqa: F811
    ingress = Ingress.from_rules([
        {"hostname": "teapot.example", "service": "http_status:418"},
        {"hostname": "down.example", "service": "http://127.0.0.1:1"},
        {"service": origin.url},
    ])
    client = OriginClient(connector_id="test")
    edge, connector = memory_pair()
    p = Proxied(edge, connector, StreamProxy(client, lambda: ingress, lambda s: s))
    p.proxy.emit = p.events.append
    try:
        yield p
    finally:
        for task in p.tasks:
            task.cancel()
        await asyncio.gather(*p.tasks, return_exceptions=True)
        await client.aclose()


def _request(host: str, target: str, method: str = "GET",
             headers: list[tuple[str, str]] | None = None) -> ConnectRequest:
    return build_connect_request(method, host, target, headers or [], scheme="http")


async def _body(stream: MemoryStream) -> bytes:
    out = b""
    while chunk := await stream.read():
        out += chunk
    return out


async def test_get_reaches_the_origin_and_comes_back(proxied: Proxied) -> None:
    stream = await proxied.open(_request("app.example", "/echo/x?y=1", headers=[("X-T", "1")]))
    status, headers = parse_http_response(await stream.receive_response())
    assert status == 200 and ("X-Origin", "test") in headers
    doc = json.loads(await _body(stream))
    assert (doc["path"], doc["query"]) == ("/echo/x", "y=1")
    assert ["X-T", "1"] in doc["headers"]
    await eventually(lambda: bool(proxied.events))
    event = proxied.events[0]
    assert (event.method, event.path, event.status, event.error) == ("GET", "/echo/x", 200, "")


async def test_request_body_is_streamed_to_the_origin(proxied: Proxied) -> None:
    body = b"z" * 300_000
    stream = await proxied.open(_request("app.example", "/upload", "POST",
                                         [("Content-Length", str(len(body)))]),
                                end_stream=False)
    await stream.write(body)
    stream.write_eof()
    assert parse_http_response(await stream.receive_response())[0] == 200
    assert json.loads(await _body(stream))["bytes"] == len(body)


async def test_http_status_rule_answers_without_an_origin(proxied: Proxied) -> None:
    stream = await proxied.open(_request("teapot.example", "/"))
    assert parse_http_response(await stream.receive_response())[0] == 418


async def test_unreachable_origin_is_a_connect_response_error(proxied: Proxied) -> None:
    stream = await proxied.open(_request("down.example", "/"))
    resp = await stream.receive_response()
    assert resp.error and await stream.read() == b""
    await eventually(lambda: bool(proxied.events))
    assert proxied.events[0].error == resp.error


async def test_private_tcp_stream_is_refused_without_warp_routing(proxied: Proxied) -> None:
    stream = await proxied.open(ConnectRequest("127.0.0.1:22", ConnectionType.TCP, []))
    resp = await stream.receive_response()
    assert "warp-routing is not enabled" in resp.error


async def test_edge_abandoning_a_silent_response_releases_the_origin(
    proxied: Proxied, origin: Origin,  # noqa: F811
) -> None:
    stream = await proxied.open(_request("app.example", "/hold"))
    assert parse_http_response(await stream.receive_response())[0] == 200
    await eventually(lambda: origin.holds == ["open"])
    stream.reset(0)  # the eyeball left: the edge resets the stream
    await eventually(lambda: origin.holds == ["released"])


async def test_configuration_push_reaches_the_handler(proxied: Proxied) -> None:
    pushed = asyncio.create_task(proxied.edge.update_configuration(7, b'{"ingress":[]}'))
    peer = await proxied.connector.accept_stream()
    await proxied.proxy.handle(peer, 0, proxied._on_config)
    assert await pushed == (7, "") and proxied.configs == [(7, b'{"ingress":[]}')]


async def test_a_stream_ended_before_its_head_is_dropped(proxied: Proxied) -> None:
    stream = proxied.edge.open_stream()
    stream.write_eof()
    peer = await proxied.connector.accept_stream()
    await asyncio.wait_for(proxied.proxy.handle(peer, 0, proxied._on_config), 5)
    assert proxied.events == []  # nothing was proxied, nothing reported


async def test_a_stream_without_a_head_is_reset_after_the_head_timeout(proxied: Proxied) -> None:
    proxied.proxy.heads = HeadWatch(0.05)
    stream = proxied.edge.open_stream()
    await stream.write(b"")  # the stream exists, its head never comes
    peer = await proxied.connector.accept_stream()
    await asyncio.wait_for(proxied.proxy.handle(peer, 0, proxied._on_config), 5)
    with pytest.raises(StreamResetError):
        await stream.read()
    assert proxied.events == []
