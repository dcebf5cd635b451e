"""The HTTP/2 front against clients that break the protocol: the offender's connection ends
with a GOAWAY, everyone else is served."""

from __future__ import annotations

import asyncio
import ssl

import h2.config
import h2.connection
import h2.events

from nbtunnel.edge.server import Edge
from tests.access.conftest import StartTunnel
from tests.e2e.h2client import goaway_code


async def _h2_client(edge: Edge) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    ctx = ssl.create_default_context(cafile=str(edge.ca_path))
    ctx.set_alpn_protocols(["h2"])
    host, port = edge.https_address  # type: ignore[misc]
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx,
                                                   server_hostname="localhost")
    assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
    return reader, writer


async def _get(edge: Edge, hostname: str) -> tuple[int, bytes]:
    reader, writer = await _h2_client(edge)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "GET"), (":scheme", "https"), (":authority", hostname),
                          (":path", "/"), ("user-agent", "curl/8")], end_stream=True)
    writer.write(conn.data_to_send())
    status, body = 0, b""
    try:
        async with asyncio.timeout(10):
            while True:
                data = await reader.read(65536)
                assert data, "the front closed the connection"
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = int(dict(event.headers)[b":status"])
                    elif isinstance(event, h2.events.DataReceived):
                        body += event.data
                        conn.acknowledge_received_data(event.flow_controlled_length,
                                                       event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        return status, body
                writer.write(conn.data_to_send())
    finally:
        writer.close()


async def test_garbage_gets_goaway_and_others_are_served(start: StartTunnel) -> None:
    t = await start("http_status:204")
    reader, writer = await _h2_client(t.edge)
    # the preface, then a DATA frame on stream 0 instead of SETTINGS: a connection error
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")
    got = b""
    async with asyncio.timeout(10):
        while data := await reader.read(65536):
            got += data
    assert goaway_code(got) is not None  # a GOAWAY frame before the close
    writer.close()
    assert await _get(t.edge, t.hostname) == (204, b"")
    status, body = await _get(t.edge, "nobody.localhost")
    assert status == 404 and b"No tunnel serves the hostname" in body
