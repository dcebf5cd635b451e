"""HTTP/2 to browsers on the HTTPS front (ALPN h2), with h2 as the state machine.

One task reads frames and feeds h2; each request stream gets a task (owned here: cancelled and
awaited when the connection ends, or at once when the client resets the stream) that routes it
exactly as the HTTP/1.1 front does (h2request.py). Flow control both ways: request DATA earns
the client new credit only once the handler forwarded it to the tunnel, and response DATA is
sent within the client's window, so a slow side bounds what we buffer.

An unauthenticated client must not be able to make the edge work for nothing (h2guard.py):
at most MAX_STREAMS request tasks per connection, reset streams whose task is still ending
included (more: REFUSED_STREAM, where h2 would end the whole connection), a budget for
resets, pings, settings and other frames without requests, header blocks bounded in size
and time; over a limit the connection ends with GOAWAY ENHANCE_YOUR_CALM. Deadlines: every
idle period, a header block (the head deadline), and a client that stops reading (the send
deadline, for the window and the socket).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from nbtunnel.edge.h2guard import H2Guard
from nbtunnel.edge.h2request import H2Request
from nbtunnel.edge.h2stream import FrontStream

if TYPE_CHECKING:
    from nbtunnel.edge.front import PublicFront

log = logging.getLogger("nbtunnel.edge.h2front")

MAX_STREAMS = 128
WINDOW = 1 << 20


class H2FrontConnection:
    """One browser connection speaking HTTP/2 (see module docstring)."""

    def __init__(self, front: PublicFront, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.front = front
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_inbound_headers=True))
        self.streams: dict[int, FrontStream] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.lost = False
        self._window: list[asyncio.Future[None]] = []
        limits = front.limits
        self.max_header_list = 2 * limits.max_head_bytes  # 431 above max_head_bytes
        self.guard = H2Guard(max_header_block=self.max_header_list + 1024)
        self.send_timeout = limits.send_timeout

    async def run(self) -> None:
        self.h2.local_settings = self._settings(MAX_STREAMS)
        self.h2.decoder.max_header_list_size = self.max_header_list  # also before the ACK
        self.h2.initiate_connection()  # advertises MAX_STREAMS
        # ... which _dispatch enforces on request tasks with REFUSED_STREAM (a stream error,
        # RFC 9113 5.1.2); h2 counts only open streams, and would end the whole connection
        self.h2.local_settings = self._settings(2**31 - 1)
        self.h2.increment_flow_control_window(8 * WINDOW)
        self.flush()
        try:
            while True:
                try:
                    async with asyncio.timeout(self._read_timeout()):
                        data = await self.reader.read(65536)
                except TimeoutError:
                    if self.guard.header_block_since is not None:
                        self._calm("a header block took longer than the head deadline")
                    else:
                        self.h2.close_connection()
                        self.flush()
                    return
                if not data:
                    return
                if (why := self.guard.feed(data, self.front.clock.monotonic())) is not None:
                    self._calm(why)
                    return
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    log.info("HTTP/2 client %s broke the protocol: %s", self.client_ip, exc)
                    self.flush()  # h2 queued a GOAWAY
                    return
                for event in events:
                    if self._dispatch(event):
                        return
                self.flush()
                await self._drain()
        except ConnectionError as exc:
            log.debug("HTTP/2 client %s: %s", self.client_ip, exc)
        finally:
            self.lost = True
            self._wake_window()
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def _dispatch(self, event: h2.events.Event) -> bool:
        """Handle one h2 event; True when the connection is over."""
        if isinstance(event, h2.events.RequestReceived):
            assert event.stream_id is not None
            ended = event.stream_ended is not None
            if len(self.tasks) >= MAX_STREAMS:  # the client ignores our SETTINGS
                self.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                return self._charge("refused HEADERS")
            new = FrontStream(self, event.stream_id, list(event.headers or []), ended)
            self.streams[event.stream_id] = new
            new.task = task = asyncio.get_running_loop().create_task(self._serve(new))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif isinstance(event, h2.events.DataReceived):
            if (stream := self.streams.get(event.stream_id or 0)) is not None:
                stream.on_data(event.data or b"", event.flow_controlled_length or 0)
            else:
                self.credit(event.stream_id or 0, event.flow_controlled_length or 0)
        elif isinstance(event, h2.events.StreamEnded):
            if (stream := self.streams.get(event.stream_id or 0)) is not None:
                stream.on_end()
        elif isinstance(event, h2.events.StreamReset):
            if (gone := self.streams.pop(event.stream_id or 0, None)) is not None:
                gone.on_reset()
                if gone.task is not None:
                    gone.task.cancel()  # its exchange resets the data stream: no work left
            self._wake_window()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._wake_window()
        elif isinstance(event, h2.events.ConnectionTerminated):
            return True
        return False

    def _settings(self, max_streams: int) -> h2.settings.Settings:
        return h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: self.max_header_list})

    def _read_timeout(self) -> float | None:
        since = self.guard.header_block_since
        if since is not None:
            waited = self.front.clock.monotonic() - since
            return max(self.front.limits.head_timeout - waited, 0.0)
        return None if self.streams else self.front.limits.keepalive_timeout

    def _charge(self, why: str) -> bool:
        """Spend one unit of the guard's budget; True (and GOAWAY) when it ran out."""
        reason = self.guard.charge(1, self.front.clock.monotonic(), why)
        if reason is not None:
            self._calm(reason)
        return reason is not None

    def _calm(self, reason: str) -> None:
        """End an abusive connection: GOAWAY ENHANCE_YOUR_CALM with the reason."""
        log.info("HTTP/2 client %s: %s; GOAWAY", self.client_ip, reason)
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM,
                                     additional_data=reason.encode())
        self.flush()

    async def _drain(self) -> None:
        """Wait for the socket to take our bytes, within the send deadline."""
        try:
            async with asyncio.timeout(self.send_timeout):
                await self.writer.drain()
        except TimeoutError:
            raise ConnectionResetError("the client stopped reading") from None

    async def _serve(self, stream: FrontStream) -> None:
        try:
            await H2Request(self.front, stream, self.client_ip).run()
        except (ConnectionError, h2.exceptions.ProtocolError) as exc:
            log.debug("HTTP/2 stream %d ended: %s", stream.stream_id, exc)
            self.reset_stream(stream.stream_id)
        except Exception:  # one broken request must not end the connection
            log.exception("HTTP/2 request failed")
            self.reset_stream(stream.stream_id)
        finally:
            self.streams.pop(stream.stream_id, None)

    # -- output ------------------------------------------------------------------------------
    def flush(self) -> None:
        out = self.h2.data_to_send()
        if out and not self.writer.is_closing():
            self.writer.write(out)

    def credit(self, stream_id: int, flow: int) -> None:
        if flow and not self.lost:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.acknowledge_received_data(flow, stream_id)
            self.flush()

    def send_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]],
                     end: bool) -> None:
        self._check(stream_id)
        self.h2.send_headers(stream_id, headers, end_stream=end)
        self.flush()

    async def send_data(self, stream_id: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            self._check(stream_id)
            size = min(self.h2.local_flow_control_window(stream_id),
                       self.h2.max_outbound_frame_size, len(view))
            if size <= 0:
                fut = asyncio.get_running_loop().create_future()
                self._window.append(fut)
                try:
                    async with asyncio.timeout(self.send_timeout):
                        await fut
                except TimeoutError:
                    self.reset_stream(stream_id)
                    raise ConnectionResetError("the client left the window closed") from None
                continue
            self.h2.send_data(stream_id, bytes(view[:size]))
            view = view[size:]
            self.flush()
            await self._drain()

    def end_stream(self, stream_id: int) -> None:
        self._check(stream_id)
        self.h2.end_stream(stream_id)
        self.flush()

    def reset_stream(self, stream_id: int,
                     code: h2.errors.ErrorCodes = h2.errors.ErrorCodes.CANCEL) -> None:
        if not self.lost:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.reset_stream(stream_id, code)
            self.flush()

    def _check(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if self.lost or stream is None or stream.reset:
            raise ConnectionResetError("the client went away")

    def _wake_window(self) -> None:
        waiters, self._window = self._window, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
