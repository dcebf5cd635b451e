"""Real QUIC+TLS on 127.0.0.1: handshake, streams in both directions, FIN/reset, datagrams."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from nbtunnel.core.httpmeta import (
    build_connect_request,
    build_connect_response,
    parse_http_response,
)
from nbtunnel.core.streams import ConnectRequest
from nbtunnel.transport.errors import (
    HandshakeError,
    StreamResetError,
    TransportError,
)
from nbtunnel.transport.quic import (
    ALPN,
    QuicServer,
    QuicSettings,
    QuicStream,
    QuicTunnelConnection,
    available_backends,
)
from nbtunnel.transport.quic.backend import LOOPBACK_DATAGRAM_ENV
from nbtunnel.transport.tls import LocalCA

from .util import dial, each_stream, edge


async def echo_stream(stream: QuicStream) -> None:
    while data := await stream.read():
        await stream.write(data)
    stream.write_eof()


async def echo_handler(conn: QuicTunnelConnection) -> None:
    await each_stream(conn, echo_stream)


async def test_handshake_alpn_and_stream0_echo(ca: LocalCA, pair: tuple[str, str]) -> None:
    client_backend, server_backend = pair
    async with edge(ca, server_backend, echo_handler) as server:
        async with dial(ca, server, client_backend) as conn:
            assert conn.alpn == ALPN
            assert conn.backend == client_backend
            assert conn.remote_address == ("127.0.0.1", server.sockname[1])
            stream = conn.open_stream()
            assert stream.stream_id == 0
            await stream.write(b"ping")
            stream.write_eof()
            assert await stream.readexactly(4) == b"ping"
            assert await stream.read() == b""
            assert stream.at_eof
            (server_conn,) = server.connections
            assert server_conn.alpn == ALPN
            assert server_conn.backend == server_backend
            assert server_conn.remote_address == ("127.0.0.1", conn.local_address[1])


async def test_wrong_ca_fails_handshake(ca: LocalCA, pair: tuple[str, str], tmp_path: Path) -> None:
    client_backend, server_backend = pair
    other = LocalCA.load_or_create(tmp_path / "other")
    async with edge(ca, server_backend, echo_handler) as server:
        with pytest.raises(HandshakeError) as info:
            async with dial(other, server, client_backend):
                pass
    assert "0x1" in str(info.value) or "alert" in str(info.value).lower()


async def test_server_opened_streams_both_directions(ca: LocalCA, pair: tuple[str, str]) -> None:
    """The edge opens one stream per request; the connector answers on the same stream."""
    client_backend, server_backend = pair
    answers: dict[int, bytes] = {}
    done = asyncio.Event()

    async def edge_handler(conn: QuicTunnelConnection) -> None:
        streams = [conn.open_stream() for _ in range(5)]
        for i, stream in enumerate(streams):
            await stream.write(f"request {i}".encode())
            stream.write_eof()
        for stream in streams:
            answers[stream.stream_id] = await stream.readexactly(12)
            assert await stream.read() == b""
        done.set()
        await conn.wait_closed()

    async with edge(ca, server_backend, edge_handler) as server:
        async with dial(ca, server, client_backend) as conn:
            for _ in range(5):
                stream = await conn.accept_stream()
                assert stream.stream_id % 4 == 1  # server-initiated bidi
                request = await stream.read()
                assert await stream.read() == b""
                await stream.write(b"answer " + request[-1:] + b"....")
                stream.write_eof()
            await asyncio.wait_for(done.wait(), 10)
    assert sorted(answers) == [1, 5, 9, 13, 17]
    assert answers[9] == b"answer 2...."


async def test_20mb_transfer_sha256(ca: LocalCA, pair: tuple[str, str]) -> None:
    client_backend, server_backend = pair
    payload = os.urandom(20 << 20)

    async def digest_handler(conn: QuicTunnelConnection) -> None:
        stream = await conn.accept_stream()
        digest = hashlib.sha256()
        while data := await stream.read():
            digest.update(data)
        await stream.write(digest.digest())
        await stream.write(payload)  # and the same 20 MB back down
        stream.write_eof()
        await conn.wait_closed()

    async with edge(ca, server_backend, digest_handler) as server:
        async with dial(ca, server, client_backend) as conn:
            stream = conn.open_stream()
            await stream.write(payload)
            stream.write_eof()
            assert await stream.readexactly(32) == hashlib.sha256(payload).digest()
            down = hashlib.sha256()
            while data := await stream.read():
                down.update(data)
            assert down.digest() == hashlib.sha256(payload).digest()


async def test_200_concurrent_streams(ca: LocalCA, pair: tuple[str, str]) -> None:
    client_backend, server_backend = pair

    async def one(conn: QuicTunnelConnection, i: int) -> None:
        stream = conn.open_stream()
        body = i.to_bytes(4, "big") * 1000
        await stream.write(body)
        stream.write_eof()
        assert await stream.readexactly(len(body)) == body
        assert await stream.read() == b""

    async with edge(ca, server_backend, echo_handler) as server:
        async with dial(ca, server, client_backend) as conn:
            async with asyncio.TaskGroup() as tg:
                for i in range(200):
                    tg.create_task(one(conn, i))


async def test_fin_is_a_half_close(ca: LocalCA, backend: str) -> None:
    """After the client's FIN the server still answers on the same stream."""

    async def handler(conn: QuicTunnelConnection) -> None:
        stream = await conn.accept_stream()
        assert await stream.read() == b"question"
        assert await stream.read() == b""
        assert stream.at_eof
        await stream.write(b"answer")
        stream.write_eof()
        await conn.wait_closed()

    async with edge(ca, backend, handler) as server:
        async with dial(ca, server, backend) as conn:
            stream = conn.open_stream()
            await stream.write(b"question")
            stream.write_eof()
            with pytest.raises(Exception, match="write after"):
                await stream.write(b"more")
            assert await stream.readexactly(6) == b"answer"
            assert await stream.read() == b""


async def test_reset_and_stop_sending(ca: LocalCA, pair: tuple[str, str]) -> None:
    client_backend, server_backend = pair
    seen: list[object] = []
    ready = asyncio.Event()

    async def handler(conn: QuicTunnelConnection) -> None:
        first = await conn.accept_stream()
        assert await first.read() == b"partial"
        ready.set()
        try:
            await first.read()
        except StreamResetError as exc:
            seen.append(exc.code)
        second = await conn.accept_stream()
        await second.read()
        second.stop_reading(9)
        await conn.wait_closed()

    async with edge(ca, server_backend, handler) as server:
        async with dial(ca, server, client_backend) as conn:
            stream = conn.open_stream()
            await stream.write(b"partial")
            await ready.wait()
            stream.reset(7)
            other = conn.open_stream()
            stopped = other.peer_stopped()  # what the connector's proxy watches per request
            with pytest.raises(StreamResetError) as info:
                for _ in range(1000):
                    await other.write(b"x" * 1000)
                    await asyncio.sleep(0.001)
            assert info.value.code == 9
            assert stopped.done() and other.peer_stopped() is stopped
    assert seen == [7]


async def test_datagrams_both_ways(ca: LocalCA, pair: tuple[str, str]) -> None:
    client_backend, server_backend = pair

    async def handler(conn: QuicTunnelConnection) -> None:
        while True:
            data = await conn.receive_datagram()
            conn.send_datagram(data[::-1])

    async with edge(ca, server_backend, handler) as server:
        async with dial(ca, server, client_backend) as conn:
            conn.send_datagram(b"abc")
            assert await asyncio.wait_for(conn.receive_datagram(), 5) == b"cba"


async def test_pq_only_key_share_like_cloudflared(ca: LocalCA, backend: str) -> None:
    """qh3 client sending only X25519MLKEM768 (as Go does); aioquic needs our ML-KEM patch."""
    if "qh3" not in available_backends():
        pytest.skip("needs qh3 as the client")
    async with edge(ca, backend, echo_handler) as server:
        async with dial(ca, server, "qh3", pq_key_share_only=True) as conn:
            stream = conn.open_stream()
            await stream.write(b"pq")
            stream.write_eof()
            assert await stream.read() == b"pq"
            (server_conn,) = server.connections
            assert server_conn.tls_group == "X25519MLKEM768"


async def test_zero_length_client_cid_like_quic_go(ca: LocalCA, pair: tuple[str, str]) -> None:
    client_backend, server_backend = pair
    async with edge(ca, server_backend, echo_handler) as server:
        async with dial(ca, server, client_backend, zero_length_cid=True) as conn:
            assert conn._quic.host_cid == b""
            for _ in range(3):
                stream = conn.open_stream()
                await stream.write(b"cid")
                stream.write_eof()
                assert await stream.read() == b"cid"


async def _echo_roundtrip(conn: QuicTunnelConnection, size: int) -> None:
    stream = conn.open_stream()
    payload = os.urandom(size)

    async def send() -> None:
        await stream.write(payload)
        stream.write_eof()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(send())
        got = bytearray()
        while data := await stream.read():
            got += data
    assert bytes(got) == payload


@pytest.mark.parametrize("how", ["reset", "stop_sending"])
async def test_reset_with_unsent_data_keeps_the_connection(
    ca: LocalCA, pair: tuple[str, str], how: str
) -> None:
    """A stream reset while the library still holds unsent data (an aborted upload, or the
    peer's STOP_SENDING) must never send bytes past the final size: the peer would close the
    whole connection with FINAL_SIZE_ERROR and every other stream on it would die."""
    client_backend, server_backend = pair
    server_conns: list[QuicTunnelConnection] = []
    first_read = asyncio.Event()

    async def handler(conn: QuicTunnelConnection) -> None:
        server_conns.append(conn)
        first = await conn.accept_stream()
        await first.read(1)
        if how == "stop_sending":
            first.stop_reading(9)
        first_read.set()
        await echo_handler(conn)

    async with edge(ca, server_backend, handler) as server:
        async with dial(ca, server, client_backend) as conn:
            stream = conn.open_stream()
            writer = asyncio.get_running_loop().create_task(stream.write(os.urandom(1 << 20)))
            await first_read.wait()
            if how == "reset":
                stream.reset(7)
            else:
                await stream.wait_peer_stopped()
            with pytest.raises(TransportError):
                await writer
                await stream.write(b"more")  # a write after the reset is refused, typed
            await _echo_roundtrip(conn, 2 << 20)  # the stale bytes, if any, are on the wire
            await _echo_roundtrip(conn, 1000)
            assert not conn.closed, conn.close_reason
            assert not server_conns[0].closed, server_conns[0].close_reason


async def test_read_joins_packet_sized_chunks_up_to_n() -> None:
    """A bulk reader gets ``n`` bytes per read() (one socket write downstream), not a packet."""

    class Conn:
        _settings = QuicSettings()
        _error = None
        granted: list[int] = []

        def _grant_credit(self, stream_id: int) -> None:
            self.granted.append(stream_id)

        def _maybe_forget(self, stream: QuicStream) -> None:
            return None

    stream = QuicStream(Conn(), 4)  # type: ignore[arg-type]
    payload = os.urandom(100 * 1400 + 7)
    for start in range(0, len(payload), 1400):
        stream._feed(payload[start:start + 1400], False)
    stream._feed(b"", True)
    sizes = []
    got = b""
    while data := await stream.read(65536 if len(got) < 131072 else 500):
        sizes.append(len(data))
        got += data
    assert got == payload
    assert sizes[:2] == [65536, 65536] and all(s <= 500 for s in sizes[2:])
    assert stream.at_eof


async def _ping_pong_until(
    conn: QuicTunnelConnection, server: QuicServer, sizes: tuple[int, int]
) -> tuple[int, int]:
    """Echo 8 KB messages (a gentle exchange: a burst could overflow a socket buffer on a
    loaded machine, and qh3 stops probing at the first lost probe) until client and server
    datagram sizes reach ``sizes``, or 200 round trips; returns (client, server) sizes."""
    stream = conn.open_stream()
    (server_conn,) = server.connections
    for _ in range(200):
        now = (conn._quic._max_datagram_size, server_conn._quic._max_datagram_size)
        if now == sizes:
            break
        await stream.write(b"m" * 8192)
        await stream.readexactly(8192)
    stream.write_eof()
    return conn._quic._max_datagram_size, server_conn._quic._max_datagram_size


@pytest.mark.skipif("qh3" not in available_backends(), reason="qh3 not installed")
async def test_qh3_server_probes_its_path_mtu_like_the_client(ca: LocalCA) -> None:
    """The edge's sends grow from 1280 to the 1452 bytes the client allows (qh3 only probes
    as a client on its own), so an upload costs the edge fewer packets."""
    async with edge(ca, "qh3", echo_handler, loopback_datagram_size=0) as server:
        async with dial(ca, server, "qh3", loopback_datagram_size=0) as conn:
            assert await _ping_pong_until(conn, server, (1452, 1452)) == (1452, 1452)


@pytest.mark.skipif("qh3" not in available_backends(), reason="qh3 not installed")
async def test_loopback_peers_use_16k_datagrams_by_default(
    ca: LocalCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edge and a connector on one host (the notebook's embedded edge, the lab, the
    benches) probe up to 16 KB datagrams unless NBTUNNEL_QUIC_LOOPBACK_DATAGRAM says 0."""
    monkeypatch.delenv(LOOPBACK_DATAGRAM_ENV, raising=False)
    assert QuicSettings().loopback_datagram_size == 16384
    async with edge(ca, "qh3", echo_handler) as server:
        async with dial(ca, server, "qh3") as conn:
            assert await _ping_pong_until(conn, server, (16384, 16384)) == (16384, 16384)
    monkeypatch.setenv(LOOPBACK_DATAGRAM_ENV, "0")
    assert QuicSettings().loopback_datagram_size == 0


async def test_a_reply_carries_the_ack_of_what_it_answers(
    ca: LocalCA, pair: tuple[str, str]
) -> None:
    """Request/response at concurrency 1: the reply packet acknowledges the request, so the
    server sends one datagram per exchange. (Both libraries write an ACK only once its 1 ms
    delay has run out; without `ack_with_data` each exchange cost an ACK-only packet more.)"""
    client_backend, server_backend = pair
    async with edge(ca, server_backend, echo_handler) as server:
        async with dial(ca, server, client_backend, keepalive=0) as conn:
            stream = conn.open_stream()
            (server_conn,) = server.connections

            def probing(quic: object) -> bool:  # (qh3 probes the path MTU; its ACKs go alone)
                return bool(getattr(quic, "_mtu_probe_sizes", None)
                            or getattr(quic, "_mtu_probe_pending", None))

            for _ in range(200):
                await stream.write(b"warm")
                assert await stream.readexactly(4) == b"warm"
                if not probing(conn._quic) and not probing(server_conn._quic):
                    break
            # count what reaches the library, one by one or in batches (not a probe, padded
            # to 1350 bytes and more, should one still go)
            quic = conn._quic
            received = 0
            deliver = quic.receive_datagram
            deliver_many = getattr(quic, "receive_datagrams", None)

            def count(data: bytes, addr: object, now: float) -> None:
                nonlocal received
                received += len(data) < 1200
                deliver(data, addr, now)

            def count_many(datagrams: list[bytes], addr: object, now: float) -> None:
                nonlocal received
                received += sum(len(data) < 1200 for data in datagrams)
                assert deliver_many is not None
                deliver_many(datagrams, addr, now)

            quic.receive_datagram = count
            if deliver_many is not None:
                quic.receive_datagrams = count_many
            rounds = 10
            for _ in range(rounds):
                await stream.write(b"ping")
                assert await stream.readexactly(4) == b"ping"
                await asyncio.sleep(0.005)  # think time: any delayed ACK would go out alone
            assert rounds <= received <= rounds + 2, received  # + the warm-up's ACK, a late one


@pytest.mark.skipif("qh3" not in available_backends(), reason="qh3 not installed")
@pytest.mark.parametrize(("client_size", "server_size", "expected"), [
    (16384, 16384, (16384, 16384)),  # both ends allow it: probes 4096, 16384 both ways
    # the edge keeps it off: it advertises no limit (the client probes up to its own
    # setting), the edge probes only to 1452
    (16384, 0, (16384, 1452)),
    (0, 16384, (1452, 1472)),  # the connector advertises qh3's 1472: the edge's probes stop
    (65527, 65527, (16384, 16384)),  # qh3 builds malformed STREAM frames beyond 16383 bytes
])
async def test_loopback_datagram_size_is_probed_both_ways(
    ca: LocalCA, client_size: int, server_size: int, expected: tuple[int, int]
) -> None:
    async with edge(ca, "qh3", echo_handler, loopback_datagram_size=server_size) as server:
        async with dial(ca, server, "qh3", loopback_datagram_size=client_size) as conn:
            assert await _ping_pong_until(conn, server, expected) == expected
            payload = os.urandom(1 << 20)  # and big packets carry a transfer intact
            stream = conn.open_stream()
            await stream.write(payload)
            stream.write_eof()
            assert await stream.readexactly(len(payload)) == payload


async def test_a_complete_response_arrives_as_head_body_and_end(
    ca: LocalCA, pair: tuple[str, str]
) -> None:
    """send_complete_response (the connector's small answer in one piece) reads back as
    send_response + write + write_eof do: the head, the body, then the end; one bigger than
    a write slice takes the ordinary path."""
    client_backend, server_backend = pair
    got: list[tuple[int, list[tuple[str, str]], bytes]] = []
    done = asyncio.Event()
    big = os.urandom(200_000)

    async def edge_handler(conn: QuicTunnelConnection) -> None:
        for _ in range(2):
            stream = conn.open_stream()
            await stream.send_request(build_connect_request("GET", "x.example", "/", []),
                                      end_stream=True)
            status, headers = parse_http_response(await stream.receive_response())
            body = b""
            while data := await stream.read():
                body += data
            got.append((status, headers, body))
        done.set()
        await conn.wait_closed()

    async with edge(ca, server_backend, edge_handler) as server:
        async with dial(ca, server, client_backend) as conn:
            for body in (b"hello world\n", big):
                stream = await conn.accept_stream()
                assert isinstance(await stream.receive_request(), ConnectRequest)
                await stream.send_complete_response(
                    build_connect_response(200, [("Content-Length", str(len(body)))]), body)
            await asyncio.wait_for(done.wait(), 10)
    assert got == [(200, [("Content-Length", "12")], b"hello world\n"),
                   (200, [("Content-Length", "200000")], big)]


@pytest.mark.skipif(not {"qh3", "aioquic"} <= set(available_backends()),
                    reason="needs qh3 and aioquic")
async def test_loopback_datagrams_to_an_aioquic_connector(ca: LocalCA) -> None:
    """aioquic announces no max_udp_payload_size (RFC 9000: 65527), so a qh3 edge probes
    its way to 16 KB datagrams towards it; aioquic takes them, and sends its own 1200."""
    async with edge(ca, "qh3", echo_handler, loopback_datagram_size=16384) as server:
        async with dial(ca, server, "aioquic") as conn:
            own = conn._quic._max_datagram_size
            assert await _ping_pong_until(conn, server, (own, 16384)) == (own, 16384)
            payload = os.urandom(2 << 20)  # and aioquic reads the big packets intact
            stream = conn.open_stream()
            await stream.write(payload)
            stream.write_eof()
            assert await stream.readexactly(len(payload)) == payload


async def test_silent_for_counts_from_the_last_datagram_both_sides(
    ca: LocalCA, pair: tuple[str, str]
) -> None:
    """What the edge's registry and peering read to spot a dead peer: a reply resets it.
    (qh3's client transport hands datagrams over in batches, which once bypassed it.)"""
    client_backend, server_backend = pair
    async with edge(ca, server_backend, echo_handler) as server:
        async with dial(ca, server, client_backend, keepalive=0) as conn:
            loop = asyncio.get_running_loop()
            stream = conn.open_stream()
            sent_at = loop.time()
            await stream.write(b"ping")
            assert await stream.readexactly(4) == b"ping"
            assert conn.silent_for <= loop.time() - sent_at
            (server_conn,) = server.connections
            assert server_conn.silent_for <= loop.time() - sent_at
