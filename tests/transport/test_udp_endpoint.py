"""The batched UDP endpoint: batch reads, per-batch deferred flush, send buffering, close."""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import pytest

from nbtunnel.transport.quic import udp as _udp
from nbtunnel.transport.quic.udp import UdpEndpoint, open_endpoint


class Recorder(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: UdpEndpoint | None = None
        self.received: list[tuple[bytes, Any]] = []
        self.flushes: list[int] = []  # datagrams seen at each flush
        self.errors: list[Exception] = []
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, UdpEndpoint)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append((data, addr))
        assert self.transport is not None
        if not self.transport.defer(self.flush):
            self.flush()

    def flush(self) -> None:
        self.flushes.append(len(self.received))

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


async def test_batch_reads_and_flushes_once_per_batch() -> None:
    transport, proto = await open_endpoint(Recorder, local_addr=("127.0.0.1", 0))
    addr = transport.get_extra_info("sockname")
    assert transport.get_extra_info("socket").getsockname() == addr
    assert transport.get_extra_info("peername") is None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        count = _udp.RECV_BATCH * 2 + 5
        for i in range(count):  # all queued before the loop gets to read any
            peer.sendto(b"x%d" % i, addr)
        await wait_for(lambda: len(proto.received) == count)
        assert [d for d, _ in proto.received] == [b"x%d" % i for i in range(count)]
        assert proto.received[0][1] == ("127.0.0.1", peer.getsockname()[1])
        # one flush per readiness callback (at most RECV_BATCH datagrams each), not per datagram
        assert proto.flushes[-1] == count
        assert len(proto.flushes) <= count // 2
        assert all(
            b - a <= _udp.RECV_BATCH
            for a, b in zip([0, *proto.flushes], proto.flushes, strict=False)
        )
        # replies go out; outside a batch defer() refuses
        transport.sendto(b"reply", proto.received[0][1])
        peer.settimeout(2)
        assert peer.recvfrom(100) == (b"reply", addr)
        assert transport.defer(proto.flush) is False
    transport.close()
    assert transport.is_closing()
    assert await asyncio.wait_for(proto.lost, 2) is None
    assert transport.get_extra_info("socket").fileno() == -1
    transport.sendto(b"ignored", ("127.0.0.1", 9))  # after close: silently dropped


async def test_failing_datagram_handler_does_not_stop_the_batch() -> None:
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))

    class Flaky(Recorder):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            super().datagram_received(data, addr)
            if data == b"bad":
                raise RuntimeError("boom")

    transport, proto = await open_endpoint(Flaky, local_addr=("127.0.0.1", 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        for data in (b"a", b"bad", b"c"):
            peer.sendto(data, transport.get_extra_info("sockname"))
        await wait_for(lambda: len(proto.received) == 3)
    assert [d for d, _ in proto.received] == [b"a", b"bad", b"c"]
    assert proto.flushes[-1] == 3
    assert len(errors) == 1 and isinstance(errors[0]["exception"], RuntimeError)
    transport.abort()
    await asyncio.wait_for(proto.lost, 2)


async def test_send_buffers_on_eagain_then_drops_beyond_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transport, proto = await open_endpoint(Recorder, local_addr=("127.0.0.1", 0))
    sent: list[bytes] = []
    blocked = True

    class FakeSock:
        def __init__(self, real: socket.socket) -> None:
            self.real = real

        def sendto(self, data: bytes, addr: Any) -> int:
            if blocked:
                raise BlockingIOError
            sent.append(data)
            return len(data)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    real = transport._sock
    monkeypatch.setattr(transport, "_sock", FakeSock(real))
    monkeypatch.setattr(_udp, "MAX_SEND_BUFFER", 3000)
    for i in range(5):
        transport.sendto(bytes([i]) * 1000, ("127.0.0.1", 9))
    assert transport.get_write_buffer_size() == 3000  # two dropped
    blocked = False
    await wait_for(lambda: transport.get_write_buffer_size() == 0)
    assert sent == [bytes([i]) * 1000 for i in range(3)]  # in order
    transport.sendto(b"direct", ("127.0.0.1", 9))
    assert sent[-1] == b"direct"
    # close() with a queued datagram: drained first, then connection_lost
    blocked = True
    transport.sendto(b"last", ("127.0.0.1", 9))
    transport.close()
    await asyncio.sleep(0.01)
    assert not proto.lost.done()
    blocked = False
    await asyncio.wait_for(proto.lost, 2)
    assert sent[-1] == b"last"
    assert real.fileno() == -1


def _burst(sizes: list[int]) -> list[bytes]:
    return [bytes([i % 251]) * size for i, size in enumerate(sizes)]


class TrainRecorder(Recorder):
    """Takes a coalesced receive as one call, as the QUIC protocols do."""

    def __init__(self) -> None:
        super().__init__()
        self.trains: list[int] = []

    def datagrams_received(self, datagrams: list[bytes], addr: Any) -> None:
        self.trains.append(len(datagrams))
        for data in datagrams:
            self.datagram_received(data, addr)


@pytest.mark.skipif(sys.platform != "linux", reason="UDP segmentation offload is Linux-only")
@pytest.mark.parametrize("recorder", [Recorder, TrainRecorder])
async def test_segmented_send_and_coalesced_receive_keep_every_datagram(
    recorder: type[Recorder],
) -> None:
    """GSO out of one endpoint, GRO into another: same datagrams, same order, fewer syscalls;
    a protocol with ``datagrams_received`` gets each coalesced train in one call (the
    shorter datagram that ends a run included, and nothing past it)."""
    rx, proto = await open_endpoint(recorder, local_addr=("127.0.0.1", 0))
    tx, _ = await open_endpoint(Recorder, local_addr=("127.0.0.1", 0))
    assert rx._gro and tx._gso
    sends: list[int] = []
    real_sendmsg = tx._sock.sendmsg

    class CountingSock:
        def sendmsg(self, *args: Any) -> int:
            sends.append(len(args[0]))
            return real_sendmsg(*args)

        def __getattr__(self, name: str) -> Any:
            return getattr(tx._sock_real, name)

    tx._sock_real = tx._sock  # type: ignore[attr-defined]
    tx._sock = CountingSock()  # type: ignore[assignment]
    # runs of one size, a shorter one closing a run, a longer one opening the next, a single
    sizes = [1200] * 70 + [500] + [1300] * 3 + [1300, 40] + [900]
    burst = _burst(sizes)
    tx.sendto_many(burst, rx.get_extra_info("sockname"))
    await wait_for(lambda: len(proto.received) == len(burst))
    assert [d for d, _ in proto.received] == burst
    assert {a for _, a in proto.received} == {tx.get_extra_info("sockname")}
    # 54 x 1200 (65,000 bytes at most per send), 16 x 1200 + the 500, 1300 x 4 + the 40;
    # the 900 alone goes through sendto()
    assert sends == [54, 17, 5]
    assert len(proto.flushes) < len(burst) // 4  # coalesced: few readiness callbacks
    if isinstance(proto, TrainRecorder):
        assert sum(proto.trains) == len(burst) - 1 and max(proto.trains) > 1  # (the 900)
    tx._sock = tx._sock_real  # type: ignore[attr-defined]
    for t in (tx, rx):
        t.close()


@pytest.mark.skipif(sys.platform != "linux", reason="UDP segmentation offload is Linux-only")
async def test_refused_segmentation_falls_back_to_one_send_per_datagram() -> None:
    rx, proto = await open_endpoint(Recorder, local_addr=("127.0.0.1", 0))
    tx, _ = await open_endpoint(Recorder, local_addr=("127.0.0.1", 0))
    real = tx._sock

    class NoGso:
        def sendmsg(self, *args: Any) -> int:
            raise OSError(5, "EIO: no GSO on this device")

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    tx._sock = NoGso()  # type: ignore[assignment]
    burst = _burst([1000] * 10)
    tx.sendto_many(burst, rx.get_extra_info("sockname"))
    assert not tx._gso  # off for good
    tx.sendto_many(burst, rx.get_extra_info("sockname"))
    await wait_for(lambda: len(proto.received) == 20)
    assert [d for d, _ in proto.received] == burst + burst
    tx._sock = real
    for t in (tx, rx):
        t.close()


async def test_plain_peer_datagrams_still_arrive_one_by_one_with_gro_on() -> None:
    rx, proto = await open_endpoint(Recorder, local_addr=("127.0.0.1", 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
        for i in range(10):
            (a if i % 2 else b).sendto(b"%d" % i, rx.get_extra_info("sockname"))
        await wait_for(lambda: len(proto.received) == 10)
        got = {(d, addr[1]) for d, addr in proto.received}
        assert got == {(b"%d" % i, (a if i % 2 else b).getsockname()[1]) for i in range(10)}
    rx.close()
