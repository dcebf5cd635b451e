"""Remote configuration over HTTP/2: an `update-configuration` request with a JSON body.

`{"version":N,"config":{...}}` in, `{"lastAppliedVersion":N,"err":null|"..."}` out; this is
how cloudflared's HTTP/2 transport carries what QUIC sends as an RPC stream.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from nbtunnel.transport.base import ConfigHandler
from nbtunnel.transport.errors import TransportError

if TYPE_CHECKING:
    from nbtunnel.transport.http2.stream import H2Stream

log = logging.getLogger("nbtunnel.transport.http2")

MAX_CONFIG = 16 << 20


class H2ConfigurationPush:
    """An `update-configuration` request: `{"version":N,"config":{...}}` in,
    `{"lastAppliedVersion":N,"err":null|"..."}` out."""

    def __init__(self, stream: H2Stream) -> None:
        self.stream = stream

    async def serve(self, apply: ConfigHandler) -> None:
        stream = self.stream
        raw = b""
        try:
            while chunk := await stream.read():
                raw += chunk
                if len(raw) > MAX_CONFIG:
                    raise ValueError("configuration too large")
            doc: Any = json.loads(raw)
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
