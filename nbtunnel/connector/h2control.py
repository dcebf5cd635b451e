"""The HTTP/2 transport's special requests: the control stream and configuration pushes.

Over HTTP/2 the edge opens the control stream itself (a request marked
`Cf-Cloudflared-Proxy-Connection-Upgrade: control-stream`: its request body carries the edge's
RPC bytes, our response body ours), and remote configuration arrives as an
`update-configuration` request with a JSON body instead of an RPC stream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from nbtunnel.connector.h2transport import CANCEL, H2ServerConnection, H2ServerStream
from nbtunnel.core.h2headers import UPGRADE_HEADER
from nbtunnel.transport.errors import TransportError

log = logging.getLogger("nbtunnel.connector.h2")

MAX_CONFIG = 16 << 20


async def accept_control(conn: H2ServerConnection) -> H2ServerStream:
    """Wait for the edge's control-stream request and answer 200 (the body streams on)."""
    while True:
        stream = await conn.accept_stream()
        if stream.header(UPGRADE_HEADER).lower() == "control-stream":
            stream.respond([(":status", "200"), ("content-type", "application/octet-stream")])
            return stream
        log.debug("request before the control stream; refusing it")
        stream.reset(CANCEL)


async def serve_update_configuration(
    stream: H2ServerStream, apply: Callable[[int, bytes], tuple[int, str]],
) -> None:
    """`{"version":N,"config":{...}}` in, `{"lastAppliedVersion":N,"err":null|"..."}` out."""
    raw = b""
    try:
        while chunk := await stream.read():
            raw += chunk
            if len(raw) > MAX_CONFIG:
                raise ValueError("configuration too large")
        doc = json.loads(raw)
        version = int(doc["version"])
        config = json.dumps(doc.get("config"), separators=(",", ":")).encode()
    except (ValueError, KeyError, TypeError) as exc:
        answer: dict[str, object] = {"lastAppliedVersion": -1, "err": f"bad request: {exc}"}
    except TransportError as exc:
        log.debug("update-configuration request failed: %s", exc)
        return
    else:
        applied, err = apply(version, config)
        answer = {"lastAppliedVersion": applied, "err": err or None}
    body = json.dumps(answer, separators=(",", ":")).encode()
    try:
        stream.respond([(":status", "200"), ("content-type", "application/json")])
        await stream.write(body)
        stream.write_eof()
    except TransportError as exc:
        log.debug("update-configuration answer failed: %s", exc)
