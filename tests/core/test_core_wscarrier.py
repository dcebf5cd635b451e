"""The WebSocket carrier codec: masking rules, control frames, Close as a half-close."""

from __future__ import annotations

import os

import pytest
from wsproto.frame_protocol import FrameProtocol, Opcode

from nbtunnel.core.wscarrier import (
    MAX_MESSAGE,
    CarrierClosed,
    CarrierError,
    WsCarrier,
    accept_key,
)


def test_accept_key_rfc6455_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_client_frames_reach_the_server_byte_exact_in_any_split() -> None:
    client, server = WsCarrier(client=True), WsCarrier(client=False)
    wire = client.send(b"hello ") + client.send(bytes(range(256)) * 300) + client.close()
    got: list[bytes | CarrierClosed] = []
    for i in range(0, len(wire), 7):
        got += server.receive(wire[i:i + 7])
    data = b"".join(x for x in got if isinstance(x, bytes))
    assert data == b"hello " + bytes(range(256)) * 300
    assert got[-1] == CarrierClosed(1000, "")
    assert server.receive(b"anything after close") == []


@pytest.mark.parametrize("client", [True, False])
def test_a_big_write_goes_as_whole_messages_of_at_most_16_kib(client: bool) -> None:
    """cloudflared's connector keeps only the first 16 KiB of each client message."""
    data = os.urandom(3 * MAX_MESSAGE + 5)
    peer = FrameProtocol(client=not client, extensions=[])
    peer.receive_bytes(WsCarrier(client=client).send(data))
    frames = list(peer.received_frames())
    assert [(f.opcode, f.message_finished, len(f.payload)) for f in frames] == [
        (Opcode.BINARY, True, MAX_MESSAGE)] * 3 + [(Opcode.BINARY, True, 5)]
    assert b"".join(f.payload for f in frames) == data
    assert MAX_MESSAGE == 16384
    assert WsCarrier(client=client).send(b"") == b""


def test_server_rejects_unmasked_frames() -> None:
    server = WsCarrier(client=False)
    with pytest.raises(CarrierError) as info:
        server.receive(WsCarrier(client=False).send(b"x"))
    assert info.value.code == 1002


def test_ping_is_answered_and_close_is_once() -> None:
    client, server = WsCarrier(client=True), WsCarrier(client=False)
    assert server.receive(client.ping()) == []
    pong = server.data_to_send()
    assert pong[:1] == b"\x8a"
    assert client.receive(pong) == []
    assert server.close() == b"\x88\x02\x03\xe8"
    assert server.close() == b""
    assert server.ping() == b""
    with pytest.raises(Exception, match="closed"):
        server.send(b"late")
    assert client.receive(b"\x88\x02\x03\xe8") == [CarrierClosed(1000, "")]
    client.close()
    assert client.finished


def test_huge_declared_length_buffers_only_what_arrived() -> None:
    server = WsCarrier(client=False)
    header = b"\x82\xff" + (2**40).to_bytes(8, "big") + b"\x00\x00\x00\x00"
    assert server.receive(header + b"a" * 1000) == [b"a" * 1000]
