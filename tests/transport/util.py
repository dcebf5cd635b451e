"""Helpers shared by the transport tests: start an edge, dial it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from nbtunnel.transport.errors import TransportClosedError
from nbtunnel.transport.quic import (
    QuicServer,
    QuicSettings,
    QuicStream,
    QuicTunnelConnection,
    available_backends,
    connect,
    serve,
)
from nbtunnel.transport.tls import LocalCA

BACKENDS = available_backends()
PAIRS = [f"{c}->{s}" for c, s in itertools.product(BACKENDS, BACKENDS)]

Handler = Callable[[QuicTunnelConnection], Awaitable[None]]


async def each_stream(conn: QuicTunnelConnection,
                      serve: Callable[[QuicStream], Awaitable[None]]) -> None:
    """A connection handler body: `serve` every stream the peer opens, until it closes."""
    async with asyncio.TaskGroup() as tg:
        while True:
            try:
                stream = await conn.accept_stream()
            except TransportClosedError:
                return
            tg.create_task(serve(stream))


@asynccontextmanager
async def edge(
    ca: LocalCA, backend: str, handler: Handler, **settings: object
) -> AsyncIterator[QuicServer]:
    server = await serve(
        "127.0.0.1",
        0,
        certfile=str(ca.cert_path),
        keyfile=str(ca.key_path),
        on_connection=handler,
        settings=QuicSettings(backend=backend, **settings),  # type: ignore[arg-type]
    )
    try:
        yield server
    finally:
        await server.close()


@asynccontextmanager
async def dial(
    ca: LocalCA, server: QuicServer, backend: str, **settings: object
) -> AsyncIterator[QuicTunnelConnection]:
    conn = await connect(
        "127.0.0.1",
        server.sockname[1],
        cafile=str(ca.ca_path),
        settings=QuicSettings(backend=backend, **settings),  # type: ignore[arg-type]
    )
    try:
        yield conn
    finally:
        conn.close()
        await conn.wait_closed()
