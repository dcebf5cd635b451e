"""The tunnel-side vantage point: a QUIC relay that terminates both legs and decodes every stream.

Why not mitmproxy here: its QUIC layer shows each stream as a TCP flow but cannot kill a raw
stream in transit, and it would need its own CA threaded through the connector. The relay is
built on ``nbtunnel.transport.quic``: it *serves* ALPN ``argotunnel`` to the connector with the
lab's own LocalCA and *dials* the edge like a connector would, then copies every stream both
ways (connector-opened stream 0 = control plane, edge-opened streams = data plane or RPC),
feeding each direction to the core's ``StreamDecoder``. Stream faults are applied here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path

from nbtunnel.core.decode import DecodedMessage, Direction, StreamDecoder
from nbtunnel.transport.errors import StreamResetError, TransportError
from nbtunnel.transport.quic import (
    QuicServer,
    QuicSettings,
    QuicStream,
    QuicTunnelConnection,
    connect,
    serve,
)
from nbtunnel.transport.tls import LocalCA
from nbtunnel_lab.faults import Fault, FaultSet
from nbtunnel_lab.records import Record, RecordStore, now

log = logging.getLogger("nbtunnel_lab.relay")
RESET_CODE = 0x1  # application error code the relay uses when it resets a stream
_pair_ids = itertools.count()


@dataclass
class _Stream:
    """One relayed stream: both legs, what was learnt about it, its plane."""

    pair: RelayedConnection
    sid: int  # connector-side stream id (what the connector logs)
    edge_sid: int
    down: QuicStream
    up: QuicStream
    plane: str
    ray: str = ""
    body: dict[str, int] = field(default_factory=lambda: {"c2e": 0, "e2c": 0})
    pumps_done: int = 0


@dataclass
class RelayedConnection:
    """A connector's connection (``down``) and the relay's own connection to the edge (``up``)."""

    id: int
    down: QuicTunnelConnection
    up: QuicTunnelConnection
    conn_index: int | None = None
    streams: dict[int, _Stream] = field(default_factory=dict)

    def close(self, reason: str) -> None:
        self.down.close(0, reason)
        self.up.close(0, reason)


class QuicRelay:
    """Listen for connectors on ``address``, relay to ``edge``, record into ``store``."""

    def __init__(self, edge: tuple[str, int], edge_ca: str, state_dir: Path,
                 store: RecordStore, faults: FaultSet) -> None:
        self.edge = edge
        self.edge_ca = edge_ca
        self.ca = LocalCA.load_or_create(state_dir)
        self.store = store
        self.faults = faults
        self.pairs: dict[int, RelayedConnection] = {}
        self._server: QuicServer | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        return self._server.sockname

    @property
    def ca_path(self) -> Path:
        """Give this to the connector as ``cacert``: the relay, not the edge, answers it."""
        return self.ca.ca_path

    async def start(self, host: str = "127.0.0.1") -> None:
        self._server = await serve(host, 0, certfile=str(self.ca.cert_path),
                                   keyfile=str(self.ca.key_path), on_connection=self._relay,
                                   settings=QuicSettings(idle_timeout=5.0))

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None

    def close_connection(self, conn_index: int | None) -> int:
        """Close the relayed connection(s) with that HA index (None: all); returns how many."""
        hit = [p for p in self.pairs.values() if conn_index in (None, p.conn_index)]
        for pair in hit:
            self._note(pair, None, "lab", "fault", f"close injected (conn {pair.conn_index})")
            pair.close("lab: injected close")
        return len(hit)

    def reset_stream(self, fault: Fault) -> bool:
        """Reset a live stream now (``stream_id`` given); False if none matched."""
        for pair in list(self.pairs.values()):
            if fault.conn_index not in (None, pair.conn_index):
                continue
            stream = pair.streams.get(fault.stream_id) if fault.stream_id is not None else None
            if stream is not None:
                fault.hits += 1
                self._reset(stream, "reset injected")
                return True
        return False

    # one connector connection -----------------------------------------------------------

    async def _relay(self, down: QuicTunnelConnection) -> None:
        try:
            up = await connect(*self.edge, cafile=self.edge_ca, settings=QuicSettings())
        except TransportError as exc:
            log.warning("relay cannot reach the edge %s: %s", self.edge, exc)
            return
        pair = RelayedConnection(next(_pair_ids), down, up)
        self.pairs[pair.id] = pair
        self._note(pair, None, "lab", "connect",
                   f"relay: connector {down.remote_address[1]} <-> edge {self.edge[1]}")
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._accept(pair, down, up, tg, from_connector=True))
                tg.create_task(self._accept(pair, up, down, tg, from_connector=False))
                tg.create_task(self._datagrams(down, up))
                tg.create_task(self._datagrams(up, down))
        finally:
            pair.close("relay closing")
            self.pairs.pop(pair.id, None)
            why = down.close_reason or up.close_reason
            self._note(pair, None, "lab", "disconnect", f"relay: connection ended ({why})")

    async def _accept(self, pair: RelayedConnection, src: QuicTunnelConnection,
                      dst: QuicTunnelConnection, tg: asyncio.TaskGroup,
                      *, from_connector: bool) -> None:
        try:
            while True:
                a = await src.accept_stream()
                b = dst.open_stream()
                down, up = (a, b) if from_connector else (b, a)
                stream = _Stream(pair, down.stream_id, up.stream_id, down, up,
                                 "control" if from_connector else "data")
                pair.streams[stream.sid] = stream
                tg.create_task(self._pump(stream, down, up, "c2e"))
                tg.create_task(self._pump(stream, up, down, "e2c"))
        except TransportError:
            pair.close("peer closed")

    async def _datagrams(self, src: QuicTunnelConnection, dst: QuicTunnelConnection) -> None:
        with contextlib.suppress(TransportError):
            while True:
                data = await src.receive_datagram()
                if not self.faults.blackholed():
                    dst.send_datagram(data)

    # one direction of one stream ----------------------------------------------------------

    async def _pump(self, stream: _Stream, src: QuicStream, dst: QuicStream,
                    direction: Direction) -> None:
        """Reader and writer apart, so a delay is latency added, not a pause per chunk."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(maxsize=256)
        decoder = StreamDecoder(direction)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._read(stream, src, dst, direction, decoder, queue))
                tg.create_task(self._write(stream, dst, direction, queue))
        except* (TransportError, OSError) as group:
            log.debug("stream %d %s ended: %s", stream.sid, direction, group.exceptions[0])
            src.stop_reading(RESET_CODE)  # the far side stopped reading: tell the near side
        finally:
            self._emit(stream, direction, decoder.close())
            if stream.body[direction]:
                self._note(stream.pair, stream, direction, "body",
                           f"body {stream.body[direction]} bytes", ray=stream.ray)
            stream.pumps_done += 1
            if stream.pumps_done == 2:
                stream.pair.streams.pop(stream.sid, None)

    async def _read(self, stream: _Stream, src: QuicStream, dst: QuicStream,
                    direction: Direction, decoder: StreamDecoder,
                    queue: asyncio.Queue[tuple[float, bytes] | None]) -> None:
        pair = stream.pair
        first = True
        while True:
            try:
                data = await src.read()
            except StreamResetError as exc:
                dst.reset(exc.code)
                self._note(pair, stream, direction, "reset", f"stream reset (code {exc.code})")
                await queue.put(None)
                return
            if not data:
                await queue.put(None)
                return
            if first and direction == "e2c" and stream.plane == "data":
                first = False
                if self.faults.take("reset", "e2c", "data", stream.sid, pair.conn_index):
                    self._reset(stream, "reset injected on a new data stream")
                    await queue.put(None)
                    return
            self._emit(stream, direction, decoder.feed(data))
            if self.faults.take("drop", direction, stream.plane, stream.sid, pair.conn_index):
                self._note(pair, stream, direction, "drop", f"dropped {len(data)} bytes")
                continue
            delay = self.faults.delay(direction, stream.plane, stream.sid, pair.conn_index)
            await queue.put((asyncio.get_running_loop().time() + delay, data))

    async def _write(self, stream: _Stream, dst: QuicStream, direction: Direction,
                     queue: asyncio.Queue[tuple[float, bytes] | None]) -> None:
        loop = asyncio.get_running_loop()
        while (item := await queue.get()) is not None:
            due, data = item
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
            rate = self.faults.rate(direction, stream.plane, stream.sid, stream.pair.conn_index)
            if rate:  # pace before writing: a single chunk (headers + body) is slowed too
                await asyncio.sleep(len(data) / rate)
            await dst.write(data)
        dst.write_eof()

    def _reset(self, stream: _Stream, why: str) -> None:
        stream.down.reset(RESET_CODE)
        stream.up.reset(RESET_CODE)
        self._note(stream.pair, stream, "lab", "fault", why)

    # records --------------------------------------------------------------------------------

    def _emit(self, stream: _Stream, direction: Direction, msgs: list[DecodedMessage]) -> None:
        pair = stream.pair
        for msg in msgs:
            if msg.kind == "body":
                stream.body[direction] += msg.length
                continue
            if msg.kind == "rpc-signature":
                stream.plane = "control"
            if msg.kind == "preamble":
                stream.plane = "data"
            if msg.kind == "ConnectRequest":
                meta = dict(msg.fields.get("metadata", []))  # type: ignore[call-overload]
                stream.ray = str(meta.get("HttpHeader:Cf-Ray", ""))
            if msg.kind == "call" and "conn_index" in msg.fields:
                pair.conn_index = int(msg.fields["conn_index"])  # type: ignore[call-overload]
            fields = dict(msg.fields, offset=msg.offset, length=msg.length,
                          edge_stream_id=stream.edge_sid)
            self.store.add(Record("tunnel", now(), msg.plane, msg.summary, direction,
                                  stream.sid, pair.conn_index, msg.kind, stream.ray, fields))

    def _note(self, pair: RelayedConnection, stream: _Stream | None, direction: str,
              kind: str, summary: str, ray: str = "") -> None:
        plane = stream.plane if stream is not None else "control"
        sid = stream.sid if stream is not None else None
        ray = ray or (stream.ray if stream is not None else "")
        self.store.add(Record("tunnel", now(), plane, summary, direction, sid, pair.conn_index,
                              kind, ray, {"relay_connection": pair.id}))
