"""cloudflared's HTTP/2 transport (`--protocol http2`), seen from the edge.

The connector dials TCP+TLS (SNI h2.cftunnel.com, no ALPN) and then serves HTTP/2: the edge is
the HTTP/2 *client* and opens every stream. `H2Connection` looks like a QUIC tunnel connection to
the rest of the edge: the control stream is a request whose bodies carry the RPC bytes, and
`open_stream()` returns a stream that translates the exchange's ConnectRequest/ConnectResponse
bytes to HTTP/2 heads (see h2wire.py), so the control handler and the front need no change.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from nbtunnel.edge.h2stream import H2DataStream, H2Stream
from nbtunnel.edge.h2wire import UPGRADE_HEADER
from nbtunnel.transport.errors import TransportClosedError, TransportError

log = logging.getLogger("nbtunnel.edge.h2")

WINDOW = 1 << 20  # per-stream receive window; bounds what an unread stream may buffer
CONN_WINDOW = 16 << 20


class H2Connection:
    """One connector connection over HTTP/2 (the edge is the client)."""

    protocol = "http2"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        peer = writer.get_extra_info("peername") or ("", 0)
        self.remote_address: tuple[str, int] = (str(peer[0]), int(peer[1]))
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.streams: dict[int, H2Stream] = {}
        self.close_reason = ""
        self._closed = asyncio.get_running_loop().create_future()
        self._window_waiters: list[asyncio.Future[None]] = []
        self._goaway = False

    @property
    def closed(self) -> bool:
        """No new streams: the connection ended, or cloudflared sent GOAWAY."""
        return self._closed.done() or self._goaway

    @property
    def terminated(self) -> bool:
        """The TCP connection is gone (streams under a GOAWAY may still finish before)."""
        return self._closed.done()

    @property
    def silent_for(self) -> float:
        """cloudflared does not ping over HTTP/2, so silence says nothing: never stale."""
        return 0.0

    def start(self) -> None:
        # set before the preface: initiate_connection() sends these as the first SETTINGS
        self.h2.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW})
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONN_WINDOW)
        self.flush()

    def flush(self) -> None:
        out = self.h2.data_to_send()
        if out and not self._writer.is_closing():
            self._writer.write(out)

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except ConnectionError as exc:
            self._terminate(f"connection lost: {exc}")
            raise TransportClosedError("the connector connection is closed", exc) from exc

    def request(self, headers: list[tuple[str, str]], *, end_stream: bool,
                data_stream: bool = False) -> H2Stream:
        """Open a request stream (HEADERS now; DATA through the returned stream)."""
        if self.closed:
            raise TransportClosedError(f"the connector connection is closed: {self.close_reason}")
        stream_id = self.h2.get_next_available_stream_id()
        stream = H2Stream(self, stream_id)
        self.streams[stream_id] = stream
        try:
            self.h2.send_headers(stream_id, headers, end_stream=end_stream)
        except h2.exceptions.ProtocolError as exc:
            del self.streams[stream_id]
            raise TransportError(f"cannot open an HTTP/2 stream: {exc}") from exc
        stream.sent_end = end_stream
        self.flush()
        return stream

    def open_control_stream(self) -> H2Stream:
        return self.request([(":method", "GET"), (":scheme", "http"),
                             (":authority", "localhost:8080"), (":path", "/"),
                             (UPGRADE_HEADER, "control-stream")], end_stream=False)

    def open_stream(self) -> H2DataStream:
        """A data stream for the exchange: it writes a ConnectRequest, reads a ConnectResponse."""
        if self.closed:
            raise TransportClosedError(f"the connector connection is closed: {self.close_reason}")
        return H2DataStream(self)

    async def update_configuration(self, version: int, config: bytes) -> tuple[int, str]:
        """Remote config push: the HTTP/2 `update-configuration` request (no RPC here)."""
        body = b'{"version":%d,"config":%s}' % (version, config)
        stream = self.request([(":method", "PUT"), (":scheme", "http"),
                               (":authority", "localhost"), (":path", "/"),
                               (UPGRADE_HEADER, "update-configuration")], end_stream=False)
        try:
            await stream.write(body)
            stream.write_eof()
            await stream.response_headers()
            raw = b""
            while chunk := await stream.read():
                raw += chunk
            doc = json.loads(raw)
        except ValueError as exc:
            raise TransportError(f"bad update-configuration answer: {exc}") from exc
        except BaseException:
            stream.reset(0)
            raise
        err = doc.get("err")
        text = "" if err is None else (str(err) if err else "the connector rejected it")
        return int(doc.get("lastAppliedVersion", -1)), text

    async def wait_window(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._window_waiters.append(fut)
        closed = self._closed
        await asyncio.wait([fut, closed], return_when=asyncio.FIRST_COMPLETED)
        if closed.done():
            raise TransportClosedError(f"the connector connection is closed: {self.close_reason}")

    def _wake_writers(self) -> None:
        waiters, self._window_waiters = self._window_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def close(self, error_code: int = 0, reason: str = "") -> None:
        """GOAWAY, then close the TCP connection (cloudflared waits for the edge to do so)."""
        if self.terminated:
            return
        with contextlib.suppress(Exception):
            self.h2.close_connection(error_code)
            self.flush()
        self._terminate(reason or "closed by the edge")
        self._writer.close()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    def _terminate(self, reason: str) -> None:
        if self.terminated:
            return
        self.close_reason = reason
        self._closed.set_result(None)
        for stream in list(self.streams.values()):
            stream.on_closed()
        self._wake_writers()

    async def run(self) -> None:
        """Read frames until the connection ends; events go to their streams."""
        try:
            while not self.terminated:
                data = await self._reader.read(65536)
                if not data:
                    self._terminate("the connector closed the TCP connection")
                    break
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    log.warning("HTTP/2 protocol error from %s: %s", self.remote_address, exc)
                    self.close(1, f"HTTP/2 protocol error: {exc}")
                    break
                for event in events:
                    self._on_event(event)
                self.flush()
        except (ConnectionError, OSError) as exc:
            self._terminate(f"connection lost: {exc}")
        except Exception as exc:  # a bug here must end this connection, not the listener
            log.exception("HTTP/2 connection from %s failed", self.remote_address)
            self._terminate(f"internal error: {exc}")
        finally:
            self._terminate(self.close_reason or "connection ended")
            self._writer.close()

    def _on_event(self, event: Any) -> None:
        sid = getattr(event, "stream_id", None)
        stream = self.streams.get(sid) if sid else None
        if isinstance(event, h2.events.ResponseReceived) and stream is not None:
            stream.on_headers([(str(n), str(v)) for n, v in event.headers])  # utf-8 decoded
        elif isinstance(event, h2.events.DataReceived):
            pad = event.flow_controlled_length - len(event.data)
            if stream is None:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                return
            if pad:
                self.h2.acknowledge_received_data(pad, event.stream_id)
            stream.on_data(event.data)
        elif isinstance(event, h2.events.StreamEnded) and stream is not None:
            stream.on_end()
        elif isinstance(event, h2.events.StreamReset) and stream is not None:
            stream.on_reset(event.error_code)
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._wake_writers()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._on_goaway(int(event.error_code or 0), event.last_stream_id)

    def _on_goaway(self, code: int, last_stream_id: int | None) -> None:
        """Graceful GOAWAY: streams up to `last_stream_id` finish, later ones never ran."""
        self.close_reason = f"the connector sent GOAWAY (code {code})"
        if code:
            self._terminate(self.close_reason)
            return
        self._goaway = True
        for sid, stream in list(self.streams.items()):
            if last_stream_id is None or sid > last_stream_id:
                stream.on_closed()  # not processed: a replayable request may go elsewhere
                self.forget(sid)

    def forget(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)


class H2Listener:
    """TCP+TLS listener for HTTP/2 connectors; owns each connection's handler and reader."""

    def __init__(self, on_connection: Callable[[H2Connection], Awaitable[None]]) -> None:
        self._on_connection = on_connection
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._conns: set[H2Connection] = set()
        self.sockname: tuple[str, int] = ("", 0)

    async def start(self, host: str, port: int, certfile: str, keyfile: str) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(certfile, keyfile)  # no ALPN: cloudflared offers none
        self._server = await asyncio.start_server(self._accept, host, port, ssl=ctx)
        self.sockname = self._server.sockets[0].getsockname()[:2]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = H2Connection(reader, writer)
        self._conns.add(conn)
        try:
            conn.start()
            async with asyncio.TaskGroup() as tg:
                reading = tg.create_task(conn.run())
                try:
                    await self._on_connection(conn)
                except TransportError as exc:
                    log.debug("HTTP/2 handler for %s ended: %s", conn.remote_address, exc)
                except Exception:
                    log.exception("HTTP/2 handler for %s failed", conn.remote_address)
                finally:
                    conn.close(0, "")  # the handler owns the connection
                    reading.cancel()
        finally:
            self._conns.discard(conn)
            self._tasks.discard(task)
            writer.close()

    async def close(self) -> None:
        """Close every connection, cancel and await their handlers, stop listening."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.close(0, "edge shutting down")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None
