"""A TCP service behind a tunnel (`tcp://` rule), reached with nbtunnel's access client.

Real edge, real connector over QUIC and HTTP/2, a real TCP echo origin, all on 127.0.0.1; the
access client speaks plain WebSocket to the edge's HTTP front here (TLS is tested with the
HTTPS front).
"""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from nbtunnel.access import AccessError, connect
from tests.access.conftest import EchoServer, StartTunnel

PROTOCOLS = ["quic", "http2"]


def _front(t: object) -> str:
    host, port = t.edge.public_address  # type: ignore[attr-defined]
    return f"{host}:{port}"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_echo_byte_exact_with_half_close(start: StartTunnel, echo: EchoServer,
                                               protocol: str) -> None:
    t = await start(f"tcp://{echo.address}", protocol)
    reader, writer = await connect(f"http://{t.hostname}", edge_address=_front(t))
    payload = os.urandom(3 * 1024 * 1024 + 17)
    got = bytearray()

    async def send() -> None:
        for i in range(0, len(payload), 100_000):
            writer.write(payload[i:i + 100_000])
            await writer.drain()
        writer.write_eof()  # half-close: the echo server answers its tail after our EOF

    async def receive() -> None:
        while data := await reader.read(65536):
            got.extend(data)

    await asyncio.wait_for(asyncio.gather(send(), receive()), 60)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload + echo.tail).digest()
    writer.close()
    assert echo.connections == ["eof"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_origin_down_is_a_clear_error(start: StartTunnel, protocol: str) -> None:
    t = await start("ssh://127.0.0.1:1", protocol)
    with pytest.raises(AccessError) as info:
        await connect(f"http://{t.hostname}", edge_address=_front(t))
    text = str(info.value)
    assert "502 Bad Gateway" in text
    if protocol == "quic":  # over HTTP/2 cloudflared's protocol carries no cause (a bare 502)
        assert "dial tcp 127.0.0.1:1: connect: connection refused" in text


async def test_origin_closing_first_ends_the_reader(start: StartTunnel) -> None:
    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-banner\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(banner, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        t = await start(f"ssh://127.0.0.1:{port}")
        reader, writer = await connect(f"http://{t.hostname}", edge_address=_front(t))
        assert await asyncio.wait_for(reader.read(), 10) == b"SSH-2.0-banner\r\n"
        writer.close()
    finally:
        server.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_bastion_dials_the_jump_destination(start: StartTunnel, echo: EchoServer,
                                                  protocol: str) -> None:
    t = await start("bastion", protocol)
    reader, writer = await connect(f"http://{t.hostname}", edge_address=_front(t),
                                   destination=f"tcp://{echo.address}/ignored-path")
    writer.write(b"via bastion")
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(), 10) == b"via bastion" + echo.tail
    writer.close()
    with pytest.raises(AccessError) as info:
        await connect(f"http://{t.hostname}", edge_address=_front(t))
    assert "502" in str(info.value)
    if protocol == "quic":
        assert "--destination flag is likely not set" in str(info.value)


def test_private_routing_over_http2_maps_like_cloudflared() -> None:
    """Cf-Cloudflared-Proxy-Src marks a private TCP stream (destination in :authority); its
    empty ConnectResponse ack goes back as a 200."""
    from nbtunnel.core.h2headers import connect_request, response_headers
    from nbtunnel.core.streams import ConnectionType, ConnectResponse

    req = connect_request([(":method", "CONNECT"), (":authority", "10.0.0.5:5432"),
                           ("cf-cloudflared-proxy-src", "198.51.100.7")], ended=False)
    assert (req.type, req.dest) == (ConnectionType.TCP, "10.0.0.5:5432")
    head = dict(response_headers(ConnectResponse(error="", metadata=[])))
    assert head[":status"] == "200"
