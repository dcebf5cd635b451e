"""The public front and the exchange on the in-memory pair: a real HTTP client on 127.0.0.1,
the connector's side scripted at the seam (heads as objects, bodies as bytes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from nbtunnel.core.httpmeta import build_connect_response, parse_http_request
from nbtunnel.core.streams import ConnectRequest, ConnectResponse
from nbtunnel.edge.front import PublicFront
from nbtunnel.transport.memory import MemoryConnection, MemoryStream
from tests.memory_edge import HOSTNAME

from .conftest import EdgeParts, register

Serve = Callable[[MemoryStream, ConnectRequest], Awaitable[None]]


@pytest.fixture
async def front(parts: EdgeParts) -> AsyncIterator[PublicFront]:
    f = PublicFront(parts.store, parts.registry)
    await f.start("127.0.0.1", 0)
    try:
        yield f
    finally:
        await f.close()


async def _connector(parts: EdgeParts, serve: Serve, index: int = 0
                     ) -> tuple[MemoryConnection, asyncio.Task[None]]:
    """A registered connection whose data streams `serve` answers."""
    _, conn = parts.connect()
    await register(conn, parts.tunnel, index, client_id=bytes([index]) * 16)

    async def accept() -> None:
        async with asyncio.TaskGroup() as tg:
            while True:
                stream = await conn.accept_stream()
                head = await stream.receive_request()
                assert isinstance(head, ConnectRequest)
                tg.create_task(serve(stream, head))

    task = asyncio.get_running_loop().create_task(accept())
    parts.tasks.append(task)
    return conn, task


async def _http(front: PublicFront, request: bytes) -> bytes:
    """Send one raw request; the response head and its Content-Length body."""
    reader, writer = await asyncio.open_connection(*front.sockname)
    writer.write(request)
    try:
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            return head + await reader.readexactly(length)
    finally:
        writer.close()


def _get(path: str = "/p?q=1", extra: bytes = b"") -> bytes:
    return (b"GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n"
            % (path.encode(), HOSTNAME.encode(), extra))


async def test_get_becomes_one_data_stream_and_its_response(
    parts: EdgeParts, front: PublicFront,
) -> None:
    seen: list[ConnectRequest] = []

    async def serve(stream: MemoryStream, req: ConnectRequest) -> None:
        seen.append(req)
        await stream.send_response(build_connect_response(
            200, [("Content-Length", "5"), ("X-Origin", "o"), ("Connection", "keep-alive")]))
        await stream.write(b"hello")
        stream.write_eof()

    await _connector(parts, serve)
    raw = await _http(front, _get(extra=b"X-Forwarded-For: 10.0.0.1\r\nTE: trailers\r\n"))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and body == b"hello"
    assert b"X-Origin: o" in head and b"Cf-Ray: " in head
    assert b"keep-alive" not in head  # hop-by-hop headers never cross the edge
    http = parse_http_request(seen[0])
    assert (http.method, http.host, http.target) == ("GET", HOSTNAME, "/p?q=1")
    names = dict(http.headers)
    assert names["X-Forwarded-For"] == "10.0.0.1, 127.0.0.1"
    assert names["Cf-Connecting-Ip"] == "127.0.0.1" and "TE" not in names


async def test_request_body_streams_to_the_connector(
    parts: EdgeParts, front: PublicFront,
) -> None:
    async def serve(stream: MemoryStream, req: ConnectRequest) -> None:
        body = b""
        while chunk := await stream.read():
            body += chunk
        await stream.send_response(build_connect_response(
            200, [("Content-Length", str(len(body)))]))
        await stream.write(body.upper())
        stream.write_eof()

    await _connector(parts, serve)
    raw = await _http(front, b"POST /up HTTP/1.1\r\nHost: %s\r\nContent-Length: 6\r\n"
                             b"\r\nabcdef" % HOSTNAME.encode())
    assert raw.endswith(b"\r\n\r\nABCDEF")


async def test_connector_error_becomes_a_502_with_the_cause(
    parts: EdgeParts, front: PublicFront,
) -> None:
    async def serve(stream: MemoryStream, req: ConnectRequest) -> None:
        await stream.send_response(ConnectResponse(error="dial tcp: connection refused",
                                                   metadata=[]))

    await _connector(parts, serve)
    raw = await _http(front, _get())
    assert raw.startswith(b"HTTP/1.1 502 ") and b"connection refused" in raw


async def test_no_live_connection_is_a_530_and_unknown_host_a_404(
    parts: EdgeParts, front: PublicFront,
) -> None:
    assert (await _http(front, _get())).startswith(b"HTTP/1.1 530 ")
    other = b"GET / HTTP/1.1\r\nHost: nobody.example\r\n\r\n"
    assert (await _http(front, other)).startswith(b"HTTP/1.1 404 ")


async def test_idempotent_request_is_retried_when_its_connection_dies(
    parts: EdgeParts, front: PublicFront,
) -> None:
    async def die(stream: MemoryStream, req: ConnectRequest) -> None:
        stream.conn.close(0, "SIGKILL")  # a replica dying before it answers

    async def answer(stream: MemoryStream, req: ConnectRequest) -> None:
        await stream.send_response(build_connect_response(200, [("Content-Length", "2")]))
        await stream.write(b"ok")
        stream.write_eof()

    await _connector(parts, die, index=0)
    await _connector(parts, answer, index=1)
    for _ in range(2):  # whichever connection round-robin picks first
        raw = await _http(front, _get())
        assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"ok")


async def test_client_leaving_a_silent_response_resets_the_stream(
    parts: EdgeParts, front: PublicFront,
) -> None:
    stopped = asyncio.Event()

    async def silent(stream: MemoryStream, req: ConnectRequest) -> None:
        await stream.send_response(build_connect_response(200, [("Content-Type", "x/y")]))
        await stream.wait_peer_stopped()  # what the connector's proxy watches
        stopped.set()

    await _connector(parts, silent)
    reader, writer = await asyncio.open_connection(*front.sockname)
    writer.write(_get())
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
    writer.close()  # the eyeball hangs up while the origin is silent
    await asyncio.wait_for(stopped.wait(), 5)
    [live] = parts.registry.connections(parts.tunnel.id)
    await asyncio.wait_for(_until(lambda: live.in_flight == 0), 5)


async def _until(cond: Callable[[], bool]) -> None:
    while not cond():  # noqa: ASYNC110 - polling a plain predicate
        await asyncio.sleep(0.01)
