"""asyncio's TLS read buffer, sized per connection.

asyncio's ``SSLProtocol`` (Python 3.11 and later) allocates and zero-fills a 256 KiB read
buffer for every TLS connection (its class attribute ``max_size``) and asks OpenSSL for up to
256 KiB per read. A TLS record carries at most 16 KiB, so most of that buffer is never used,
but it is resident: an idle HTTP/2 tunnel connection cost the edge ~306 KiB on the asyncio loop
against ~67 KiB on uvloop, and every idle visitor on the HTTPS front as much.

Changing the class attribute would change every TLS connection in the process (a notebook
kernel's too), so :func:`trim_read_buffer` sets a smaller size on one connection once its
handshake is done. On uvloop, or on a Python whose ``SSLProtocol`` lacks these fields, it does
nothing.
"""

from __future__ import annotations

import asyncio

#: Bytes read from the socket per pass: two full TLS records. 16 KiB halved bulk throughput;
#: 32 KiB keeps it (HTTP/2 tunnel, 50 MB each way) and an idle connection at ~85 KiB.
TLS_READ_BUFFER = 32 * 1024


def trim_read_buffer(transport: asyncio.BaseTransport, size: int = TLS_READ_BUFFER) -> bool:
    """Give this TLS connection a ``size``-byte read buffer; True when it was changed.

    Call it from ``connection_made`` (asyncio calls that after the handshake) or with a
    stream writer's transport. The buffer is only rebound: the bytes asyncio already
    received were copied into OpenSSL's input before this runs.
    """
    proto = getattr(transport, "_ssl_protocol", None)
    buf = getattr(proto, "_ssl_buffer", None)
    if proto is None or not isinstance(buf, bytearray) or len(buf) <= size:
        return False
    if not isinstance(getattr(proto, "max_size", None), int):
        return False
    proto.max_size = size  # instance attribute: this connection only
    proto._ssl_buffer = bytearray(size)
    proto._ssl_buffer_view = memoryview(proto._ssl_buffer)
    return True
