"""trim_read_buffer: a real TLS connection on 127.0.0.1 keeps working with the smaller buffer."""

from __future__ import annotations

import asyncio
import hashlib
import ssl

from nbtunnel.transport.tls import LocalCA
from nbtunnel.transport.tls_buffer import TLS_READ_BUFFER, trim_read_buffer

PAYLOAD = bytes(range(256)) * 4096 * 3  # 3 MiB: many reads of the trimmed buffer


class Sink(asyncio.Protocol):
    """A TLS server protocol that trims its buffer and hashes what it receives."""

    def __init__(self, done: asyncio.Future[tuple[bool, bool, str]]) -> None:
        self.done = done
        self.trimmed = False
        self.sha = hashlib.sha256()
        self.size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.trimmed = trim_read_buffer(transport)
        self.again = trim_read_buffer(transport)  # already small: nothing to do

    def data_received(self, data: bytes) -> None:
        self.sha.update(data)
        self.size += len(data)
        if self.size >= len(PAYLOAD) and not self.done.done():
            self.done.set_result((self.trimmed, self.again, self.sha.hexdigest()))


async def test_trimmed_tls_connection_carries_every_byte(ca: LocalCA) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(ca.cert_path, ca.key_path)
    client_ctx = ssl.create_default_context(cafile=str(ca.ca_path))
    client_ctx.check_hostname = False
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[bool, bool, str]] = loop.create_future()
    server = await loop.create_server(lambda: Sink(done), "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        assert trim_read_buffer(writer.transport)  # the tests run on asyncio's loop
        proto = writer.transport._ssl_protocol  # type: ignore[attr-defined]
        assert len(proto._ssl_buffer) == TLS_READ_BUFFER
        assert proto.max_size == TLS_READ_BUFFER
        assert type(proto).max_size == 256 * 1024  # the class, other connections: untouched
        writer.write(PAYLOAD)
        await writer.drain()
        trimmed, again, digest = await asyncio.wait_for(done, 30)
        assert digest == hashlib.sha256(PAYLOAD).hexdigest()
        assert trimmed and not again
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_not_a_tls_transport() -> None:
    assert trim_read_buffer(asyncio.Transport()) is False
