"""Raw HTTP/1.1 on a socket: send exact bytes, read back each response as the wire has it."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    raw_head: bytes = b""
    extra: dict[str, object] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)

    def json(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.body)
        return data


async def read_response(reader: asyncio.StreamReader, method: str = "GET") -> Response:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = [(n, v.strip()) for n, _, v in (line.partition(":") for line in lines[1:] if line)]
    resp = Response(status, headers, b"", raw)
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return resp
    length = resp.header("Content-Length")
    if resp.header("Transfer-Encoding") == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        resp.body = bytes(body)
    elif length is not None:
        resp.body = await reader.readexactly(int(length))
    else:
        resp.body = await reader.read()
    return resp


async def roundtrip(address: tuple[str, int], data: bytes, methods: list[str],
                    timeout: float = 20) -> tuple[list[Response], bool]:
    """Send ``data`` at once; read one response per method; then whether the edge closed."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        async with asyncio.timeout(timeout):
            writer.write(data)
            await writer.drain()
            responses = [await read_response(reader, m) for m in methods]
            try:
                closed = await asyncio.wait_for(reader.read(1), 0.5) == b""
            except TimeoutError:
                closed = False
        return responses, closed
    finally:
        writer.close()


async def wait_closed(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True if the edge closes the connection within ``timeout`` (reading what is left)."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
        return True
    except TimeoutError:
        return False
