"""A hostile connector: registers a quick tunnel over raw QUIC, then answers each data stream
with whatever the test scripts (bytes the real connector would never send)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from nbtunnel.connector.quick import request_quick_tunnel
from nbtunnel.core.httpmeta import build_connect_response
from nbtunnel.core.registration import RegistrationClient, RegistrationResult
from nbtunnel.core.schema import (
    ClientInfo,
    ConnectionDetails,
    ConnectionOptions,
    RegisterConnectionParams,
    TunnelAuth,
)
from nbtunnel.core.streams import HeadParser, encode_connect_response
from nbtunnel.edge.server import Edge
from nbtunnel.transport.errors import TransportError
from nbtunnel.transport.quic import QuicStream, connect

Answer = Callable[[QuicStream], Awaitable[None]]


def head(status: int, headers: list[tuple[str, str]]) -> bytes:
    return encode_connect_response(build_connect_response(status, headers))


BAD_HEADS = {
    "status 999": head(999, []),
    "status 103 as the answer": head(103, []),
    "101 without an upgrade": head(101, [("Connection", "Upgrade"), ("Upgrade", "websocket")]),
    "two Content-Lengths": head(200, [("Content-Length", "3"), ("Content-Length", "4")]),
    "NUL in a value": head(200, [("X-A", "a\x00b")]),
    "CR LF in a value": head(200, [("X-A", "a\r\nSet-Cookie: injected=1")]),
    "invalid header name": head(200, [("Bad Name", "x")]),
    "NUL in a header name": head(200, [("X-\x00A", "x")]),
}
"""Response heads the edge must refuse (502) on either front, by what is wrong with them."""


async def never_answer(stream: QuicStream) -> None:
    """Read the request head, answer nothing (the edge's response deadline is what ends it)."""


def answer_with(data: bytes, *, fin: bool = True) -> Answer:
    async def answer(stream: QuicStream) -> None:
        await stream.write(data)
        if fin:
            stream.write_eof()
    return answer


@dataclass
class Hostile:
    hostname: str
    answer: Answer
    resets: list[int] = field(default_factory=list)
    """Streams the edge reset or stopped while we held them (by index)."""
    opened: int = 0
    """Data streams the edge opened to us."""


@asynccontextmanager
async def hostile_connector(edge: Edge, answer: Answer) -> AsyncIterator[Hostile]:
    quick = await request_quick_tunnel(edge.api_url)
    creds = quick.credentials
    conn = await connect(*edge.quic_address, cafile=str(edge.ca_path))
    hostile = Hostile(quick.hostname, answer)
    try:
        control = conn.open_stream()
        rpc = RegistrationClient()
        rpc.register(RegisterConnectionParams(
            auth=TunnelAuth(creds.account_tag, creds.secret), tunnel_id=creds.tunnel_id.bytes,
            conn_index=0,
            options=ConnectionOptions(ClientInfo(uuid.uuid4().bytes, [], "evil", "x"))))
        await control.write(rpc.data_to_send())
        result = None
        while result is None:
            for ev in rpc.receive_data(await control.read()):
                if isinstance(ev, RegistrationResult):
                    result = ev.response
        assert isinstance(result, ConnectionDetails)

        async def serve_one(index: int, stream: QuicStream) -> None:
            parser = HeadParser("request")
            with contextlib.suppress(TransportError):
                while parser.feed(await stream.read()) is None:
                    pass
                await hostile.answer(stream)
                await stream.wait_peer_stopped()
                hostile.resets.append(index)

        async def serve() -> None:
            async with asyncio.TaskGroup() as tg:
                index = 0
                while True:
                    try:
                        stream = await conn.accept_stream()
                    except TransportError:
                        return
                    tg.create_task(serve_one(index, stream))
                    index += 1
                    hostile.opened = index

        task = asyncio.get_running_loop().create_task(serve())
        try:
            yield hostile
        finally:
            conn.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        conn.close()
