"""Pipes between a tunnel data stream and a TCP connection, with half-close both ways.

`pipe_raw` carries bytes as they are (private-routing `type = tcp` streams): the edge's FIN
becomes our FIN to the origin (`write_eof`), the origin's EOF becomes our FIN on the stream, and
the flow is over when both directions ended. `pipe_carrier` does the same through a WebSocket
(`WsCarrier`, server side): a Close frame from the client (or the edge's FIN) half-closes the
origin, the origin's EOF is answered with our Close frame, and data keeps flowing the other way
until that side ends too. Any failure (reset stream, broken socket, bad framing) ends the flow
at once. The data stream is flow-controlled and `drain()` bounds the origin side, so neither
direction buffers more than a window.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from nbtunnel.core.wscarrier import CarrierClosed, CarrierError, WsCarrier
from nbtunnel.transport.base import DataStream

if TYPE_CHECKING:
    from nbtunnel.connector.stream_origin import Flow

READ_SIZE = 65536
PING_INTERVAL = 54.0  # cloudflared pings the WebSocket client every 54 s


def _half_close(writer: asyncio.StreamWriter) -> None:
    if writer.can_write_eof() and not writer.is_closing():
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()


async def _run(*directions: Callable[[], Coroutine[Any, Any, None]],
               background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
               stream: DataStream) -> None:
    """Run both directions until both finish (`background` alongside until then) in one
    TaskGroup; the first failure cancels everything, resets the stream and is raised as is."""
    try:
        async with asyncio.TaskGroup() as tg:
            jobs = [tg.create_task(d()) for d in directions]
            side = [tg.create_task(b()) for b in background]
            await asyncio.wait(jobs)  # a failing job cancels this wait and every other task
            for task in side:
                task.cancel()
    except BaseException as exc:
        with contextlib.suppress(Exception):
            stream.reset(0)
        if isinstance(exc, BaseExceptionGroup):
            raise exc.exceptions[0] from exc
        raise
    with contextlib.suppress(Exception):
        stream.write_eof()


async def pipe_raw(stream: DataStream, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter, flow: Flow) -> None:
    async def edge_to_origin() -> None:
        data = b""
        while True:
            if data:
                flow.bytes_in += len(data)
                writer.write(data)
                await writer.drain()
            data = await stream.read(READ_SIZE)
            if not data:
                _half_close(writer)
                return

    async def origin_to_edge() -> None:
        while data := await reader.read(READ_SIZE):
            flow.bytes_out += len(data)
            await stream.write(data)
        stream.write_eof()

    with contextlib.suppress(ConnectionError):
        await _run(edge_to_origin, origin_to_edge, stream=stream)


async def pipe_carrier(stream: DataStream, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter, carrier: WsCarrier, flow: Flow) -> None:
    lock = asyncio.Lock()  # frames from both directions must not interleave on the stream

    async def send(frame: bytes) -> None:
        if frame:
            async with lock:
                await stream.write(frame)

    async def edge_to_origin() -> None:
        data = b""
        while True:
            if data:
                try:
                    events = carrier.receive(data)
                except CarrierError as exc:
                    await send(carrier.close(exc.code, str(exc)[:100]))
                    raise
                for event in events:
                    if isinstance(event, CarrierClosed):
                        _half_close(writer)
                        return
                    flow.bytes_in += len(event)
                    writer.write(event)
                await writer.drain()
                await send(carrier.data_to_send())
            data = await stream.read(READ_SIZE)
            if not data:  # the edge ended the stream without a Close: same meaning
                _half_close(writer)
                return

    async def origin_to_edge() -> None:
        while data := await reader.read(READ_SIZE):
            flow.bytes_out += len(data)
            await send(carrier.send(data))
        await send(carrier.close())

    async def pinger() -> None:
        while not carrier.close_sent:
            await asyncio.sleep(PING_INTERVAL)
            await send(carrier.ping())

    with contextlib.suppress(ConnectionError, CarrierError):
        await _run(edge_to_origin, origin_to_edge, background=[pinger], stream=stream)
