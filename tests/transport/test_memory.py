"""The in-memory TunnelConnection pair behaves like the real transports at the seam."""

from __future__ import annotations

import asyncio

import pytest

from nbtunnel.core.httpmeta import build_connect_request, build_connect_response
from nbtunnel.core.streams import ConnectRequest, ConnectResponse
from nbtunnel.transport.errors import StreamResetError, TransportClosedError, TransportError
from nbtunnel.transport.memory import HIGH_WATER, MemoryConfigurationPush, memory_pair

REQ = build_connect_request("POST", "a.example", "/x", [("Content-Length", "2")], scheme="http")


async def test_heads_and_bodies_both_ways() -> None:
    edge, connector = memory_pair()
    stream = edge.open_stream()
    await stream.send_request(REQ, end_stream=False)
    await stream.write(b"hi")
    stream.write_eof()
    peer = await connector.accept_stream()
    assert await peer.receive_request() == REQ
    assert await peer.read() == b"hi" and await peer.read() == b""
    await peer.send_response(build_connect_response(200, [("X-A", "1")]))
    await peer.write(b"body")
    peer.write_eof()
    assert await stream.receive_response() == build_connect_response(200, [("X-A", "1")])
    assert await stream.read(2) == b"bo" and await stream.read() == b"dy"
    assert await stream.read() == b""


async def test_control_stream_follows_the_quic_roles() -> None:
    edge, connector = memory_pair()
    ours = await connector.control_stream()
    await ours.write(b"rpc")
    theirs = await edge.control_stream()
    assert await theirs.read() == b"rpc"


async def test_writer_waits_while_the_peer_holds_a_full_buffer() -> None:
    edge, connector = memory_pair()
    stream = edge.open_stream()
    peer = await connector.accept_stream()
    writer = asyncio.create_task(stream.write(b"x" * (HIGH_WATER + 1)))
    await asyncio.sleep(0)
    assert not writer.done()  # over the high-water mark until the peer reads
    got = 0
    while got <= HIGH_WATER:
        got += len(await peer.read())
    await asyncio.wait_for(writer, 1)


async def test_reset_reaches_the_peer_both_ways() -> None:
    edge, connector = memory_pair()
    stream = edge.open_stream()
    await stream.send_request(REQ, end_stream=False)
    peer = await connector.accept_stream()
    stopped = asyncio.create_task(peer.wait_peer_stopped())
    future = peer.peer_stopped()
    stream.reset(0)
    await asyncio.wait_for(stopped, 1)
    assert future.done()
    with pytest.raises(StreamResetError):
        await peer.write(b"late")


async def test_error_response_ends_the_stream() -> None:
    edge, connector = memory_pair()
    stream = edge.open_stream()
    await stream.send_request(REQ, end_stream=True)
    peer = await connector.accept_stream()
    await peer.send_response(ConnectResponse(error="refused", metadata=[]))
    assert (await stream.receive_response()).error == "refused"
    assert await stream.read() == b""


async def test_an_unanswered_stream_is_a_transport_error() -> None:
    edge, connector = memory_pair()
    stream = edge.open_stream()
    await stream.send_request(REQ, end_stream=True)
    (await connector.accept_stream()).write_eof()
    with pytest.raises(TransportError, match="before answering"):
        await stream.receive_response()


async def test_configuration_push_calls_the_connector_handler() -> None:
    edge, connector = memory_pair()
    pushed = asyncio.create_task(edge.update_configuration(3, b"{}"))
    head = await (await connector.accept_stream()).receive_request()
    assert isinstance(head, MemoryConfigurationPush)
    await head.serve(lambda version, config: (version, "" if config == b"{}" else "bad"))
    assert await pushed == (3, "")


async def test_close_fails_everything_pending_on_both_ends() -> None:
    edge, connector = memory_pair()
    stream = edge.open_stream()
    await stream.send_request(REQ, end_stream=True)
    pushed = asyncio.create_task(edge.update_configuration(1, b"{}"))
    reading = asyncio.create_task(stream.receive_response())
    accepting = asyncio.create_task(edge.accept_stream())
    await asyncio.sleep(0)
    connector.close(0, "bye")
    for task in (pushed, reading, accepting):
        with pytest.raises(TransportClosedError):
            await asyncio.wait_for(task, 1)
    assert edge.terminated and "bye" in edge.close_reason
    with pytest.raises(TransportClosedError):
        edge.open_stream()
    await asyncio.wait_for(edge.wait_closed(), 1)
    assert isinstance(REQ, ConnectRequest)
