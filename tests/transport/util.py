"""Helpers shared by the transport tests: start an edge, dial it."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from nbtunnel.transport.quic import (
    QuicServer,
    QuicSettings,
    QuicTunnelConnection,
    available_backends,
    connect,
    serve,
)
from nbtunnel.transport.tls import LocalCA

BACKENDS = available_backends()
PAIRS = [f"{c}->{s}" for c, s in itertools.product(BACKENDS, BACKENDS)]

Handler = Callable[[QuicTunnelConnection], Awaitable[None]]


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
