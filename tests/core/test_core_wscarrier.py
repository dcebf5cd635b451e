"""The WebSocket carrier codec: masking rules, control frames, Close as a half-close."""

from __future__ import annotations

import pytest

from nbtunnel.core.wscarrier import CarrierClosed, CarrierError, WsCarrier, accept_key


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
