"""One request stream of the HTTPS front's HTTP/2 side, as its request task sees it: body
chunks in (credit goes back to the client only as they are taken), response frames out
through the connection (`h2front.H2FrontConnection`, which owns the h2 state machine)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

import h2.errors

if TYPE_CHECKING:
    from nbtunnel.edge.h2front import H2FrontConnection


class FrontStream:
    """One client request stream: body chunks in, response frames out (used by H2Request)."""

    def __init__(self, conn: H2FrontConnection, stream_id: int,
                 headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.headers = headers
        self.ended = ended  # the client sent END_STREAM
        self.reset = False
        self.task: asyncio.Task[None] | None = None
        self._chunks: deque[tuple[bytes, int]] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def on_data(self, data: bytes, flow: int) -> None:
        self._chunks.append((data, flow))
        self._wake()

    def on_end(self) -> None:
        self.ended = True
        self._wake()

    def on_reset(self) -> None:
        self.reset = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def read(self) -> bytes:
        """Next request body chunk; b"" at END_STREAM. Credit goes back as chunks are taken."""
        while not self._chunks:
            if self.reset:
                raise ConnectionResetError("the client reset the stream")
            if self.ended or self.conn.lost:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data, flow = self._chunks.popleft()
        self.conn.credit(self.stream_id, flow)
        return data

    def respond(self, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        self.conn.send_headers(self.stream_id, headers, end)

    async def write(self, data: bytes) -> None:
        await self.conn.send_data(self.stream_id, data)

    def end(self) -> None:
        self.conn.end_stream(self.stream_id)

    def abort(self, *, no_error: bool = False) -> None:
        """RST_STREAM: CANCEL, or NO_ERROR after a complete response (RFC 9113 8.1)."""
        self.conn.reset_stream(self.stream_id, h2.errors.ErrorCodes.NO_ERROR if no_error
                               else h2.errors.ErrorCodes.CANCEL)
