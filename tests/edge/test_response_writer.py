"""Unit tests of the front's response writer (held output: one send per small response; the
send deadline for a client that takes no byte) and of the lazy deadline its connection waits
under."""

from __future__ import annotations

import asyncio

import pytest

from nbtunnel.edge.deadline import Deadline
from nbtunnel.edge.response_writer import ResponseWriter, SendBatch


class _Recorder:
    """The part of asyncio.StreamWriter the writer uses; records each write()."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.transport = self

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    async def drain(self) -> None:
        pass

    def abort(self) -> None:
        self.writes.append(b"<abort>")


def _writer(**kw: object) -> tuple[ResponseWriter, _Recorder]:
    rec = _Recorder()
    return ResponseWriter(rec, ray="r-LOC", **kw), rec  # type: ignore[arg-type]


async def test_small_response_is_one_write() -> None:
    out, rec = _writer()
    out.start(200, [("Content-Length", "2")], length=2)
    assert rec.writes == [] and out.held > 0
    assert out.add(b"ok")
    assert await out.end()
    assert len(rec.writes) == 1
    assert rec.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert rec.writes[0].endswith(b"\r\n\r\nok")


async def test_chunked_response_head_chunk_and_last_chunk_in_one_write() -> None:
    out, rec = _writer()
    out.start(200, [], length=None)
    out.add(b"hello")
    await out.end()
    assert len(rec.writes) == 1 and rec.writes[0].endswith(b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")


async def test_flush_sends_the_head_before_a_wait_and_body_writes_at_once() -> None:
    out, rec = _writer()
    out.start(200, [("Content-Type", "text/event-stream")], length=None)
    await out.flush()  # what a relay does before it waits for the stream
    assert len(rec.writes) == 1 and b"Transfer-Encoding: chunked" in rec.writes[0]
    assert await out.body(b"data: 1\n\n")
    assert rec.writes[1] == b"9\r\ndata: 1\n\n\r\n"
    await out.flush()  # nothing held: nothing sent
    assert len(rec.writes) == 2


async def test_past_content_length_is_cut_and_abort_drops_what_is_held() -> None:
    out, rec = _writer()
    out.start(200, [("Content-Length", "2")], length=2)
    assert not out.add(b"okay")
    await out.end()
    assert rec.writes[0].endswith(b"\r\n\r\nok") and not out.keep_alive
    out, rec = _writer()
    out.start(200, [("Content-Length", "9")], length=9)
    out.add(b"part")
    out.abort()
    assert rec.writes == [b"<abort>"]


async def _wait_forever() -> None:
    await asyncio.get_running_loop().create_future()


async def test_deadline_cancels_its_task_and_says_so() -> None:
    loop = asyncio.get_running_loop()

    async def guarded(when: float) -> str:
        deadline = Deadline()
        deadline.arm(when)
        try:
            await _wait_forever()
        except asyncio.CancelledError:
            if deadline.expired():
                return "expired"
            raise
        finally:
            deadline.close()
        return "done"

    assert await guarded(loop.time() + 0.02) == "expired"
    task = loop.create_task(guarded(loop.time() + 60))
    await asyncio.sleep(0)
    task.cancel()  # someone else's cancellation is not the deadline's
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_deadline_moved_later_or_disarmed_does_not_fire_early() -> None:
    loop = asyncio.get_running_loop()
    deadline = Deadline()
    start = loop.time()
    deadline.arm(start + 0.02)
    loop.call_later(0.01, deadline.arm, start + 0.15)  # moved later by another callback
    with pytest.raises(asyncio.CancelledError):
        await _wait_forever()
    assert deadline.expired() and loop.time() >= start + 0.15
    deadline.arm(loop.time() + 0.01)
    deadline.disarm()
    await asyncio.sleep(0.05)  # the timer runs out while disarmed: nothing happens
    deadline.close()


class _Stuck(_Recorder):
    """A socket whose buffer the client empties by ``per_wait`` bytes each time the writer
    waits on it (0: a client that never reads), answering on the ``answer_at``-th wait."""

    def __init__(self, buffered: int, per_wait: int, answer_at: int = 0) -> None:
        super().__init__()
        self.buffered, self.per_wait, self.answer_at, self.waits = buffered, per_wait, answer_at, 0

    def get_write_buffer_size(self) -> int:
        return self.buffered

    async def drain(self) -> None:
        self.waits += 1
        self.buffered -= self.per_wait
        if self.waits != self.answer_at:
            await _wait_forever()


async def test_a_client_that_takes_nothing_is_cut_at_the_send_deadline() -> None:
    sock = _Stuck(buffered=1 << 20, per_wait=0)
    out = ResponseWriter(sock, ray="r", deadline=Deadline(), send_timeout=0.01)  # type: ignore[arg-type]
    out.start(200, [], length=None)
    with pytest.raises(ConnectionResetError, match=r"took no byte for 0\.01 s"):
        await out.flush()
    assert sock.writes[-1] == b"<abort>" and not out.keep_alive and sock.waits == 1
    assert not await out.end()  # after the cut the connection is not reused


async def test_a_slow_client_that_keeps_taking_bytes_is_not_cut() -> None:
    """Each send deadline finds fewer bytes buffered than the one before: the wait goes on
    (the deadline is for a client that takes no byte at all, not for a slow one)."""
    sock = _Stuck(buffered=1 << 20, per_wait=1, answer_at=4)
    out = ResponseWriter(sock, ray="r", deadline=Deadline(), send_timeout=0.01)  # type: ignore[arg-type]
    out.start(200, [], length=None)
    await out.flush()
    assert sock.waits == 4 and b"<abort>" not in sock.writes and out.keep_alive


class _Transport(_Recorder):
    """A recorder that is also the transport: closing state for the send batch."""

    def __init__(self) -> None:
        super().__init__()
        self.closing = False

    def is_closing(self) -> bool:
        return self.closing


async def test_kept_alive_responses_of_one_pass_leave_together_at_the_next() -> None:
    """The last send of a kept-alive response waits for the end of the loop's pass, so the
    responses that end in one pass are sent back to back (one wake-up of a busy client)."""
    batch = SendBatch()
    socks = [_Transport(), _Transport(), _Transport()]
    outs = [ResponseWriter(s, ray="r", batch=batch) for s in socks]  # type: ignore[arg-type]
    for out in outs:
        out.start(200, [("Content-Length", "2")], length=2)
        out.add(b"ok")
    assert all([await out.end() for out in outs])
    socks[2].closing = True  # aborted meanwhile: nothing is written to it
    assert all(s.writes == [] for s in socks)
    await asyncio.sleep(0)
    assert [len(s.writes) for s in socks] == [1, 1, 0]
    assert socks[0].writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert socks[0].writes[0].endswith(b"\r\n\r\nok")


async def test_a_held_response_goes_before_any_other_send_on_its_connection() -> None:
    """Pipelined requests: the next response's first flush, a refusal, a 100-continue or the
    connection's close release what the batch holds first, so order is kept."""
    batch = SendBatch()
    sock = _Transport()
    first = ResponseWriter(sock, ray="r", batch=batch)  # type: ignore[arg-type]
    first.start(200, [("Content-Length", "1")], length=1)
    first.add(b"1")
    await first.end()
    second = ResponseWriter(sock, ray="r", batch=batch)  # type: ignore[arg-type]
    second.start(200, [], length=None)
    await second.flush()
    assert len(sock.writes) == 2 and sock.writes[0].endswith(b"\r\n\r\n1")
    assert b"Transfer-Encoding: chunked" in sock.writes[1]
    await asyncio.sleep(0)
    assert len(sock.writes) == 2  # released once, never sent twice
    third = ResponseWriter(sock, ray="r", batch=batch)  # type: ignore[arg-type]
    third.page(404, "no")
    await third.end()
    batch.release(sock)  # what the front does before it closes the connection
    assert len(sock.writes) == 3 and sock.writes[2].startswith(b"HTTP/1.1 404 ")


async def test_a_response_that_closes_the_connection_is_sent_at_once() -> None:
    batch = SendBatch()
    sock = _Transport()
    out = ResponseWriter(sock, ray="r", batch=batch, keep_alive=False)  # type: ignore[arg-type]
    out.page(400, "bad")
    assert not await out.end()
    assert len(sock.writes) == 1 and b"Connection: close" in sock.writes[0]
