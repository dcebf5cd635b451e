"""Translation between the QUIC data-stream heads and cloudflared's HTTP/2 transport.

Over HTTP/2 the edge sends each eyeball request as an ordinary HTTP/2 request and cloudflared
answers with `:status`, the origin's headers serialized in `cf-cloudflared-response-headers`
(`b64(name):b64(value)` pairs joined by `;`, unpadded standard base64) and a
`cf-cloudflared-response-meta` saying whether the origin or cloudflared itself answered.
The codec lives in nbtunnel.core.h2headers (the connector uses it too).
These pure functions let the exchange keep speaking ConnectRequest/ConnectResponse bytes.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from nbtunnel.core.h2headers import (
    RESPONSE_HEADERS,
    RESPONSE_META,
    UPGRADE_HEADER,
    Headers,
    decode_serialized_headers,
    encode_serialized_headers,
)
from nbtunnel.core.httpmeta import (
    HTTP_HEADER,
    HTTP_HOST,
    HTTP_METHOD,
    build_connect_response,
    request_has_body,
)
from nbtunnel.core.streams import (
    ConnectionType,
    ConnectRequest,
    ConnectResponse,
    encode_connect_response,
)

__all__ = ["RESPONSE_HEADERS", "RESPONSE_META", "UPGRADE_HEADER", "connect_response",
           "decode_serialized_headers", "encode_serialized_headers", "request_headers"]

# Connection-specific headers are illegal in HTTP/2 (RFC 9113 §8.2.2); Host becomes :authority.
_H2_DROP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
            "host", "te"}


def request_headers(req: ConnectRequest) -> tuple[list[tuple[str, str]], bool]:
    """HTTP/2 request headers for a ConnectRequest, and whether a body (DATA) follows."""
    method = "GET"
    authority = ""
    extra: Headers = []
    for key, value in req.metadata:
        if key == HTTP_METHOD:
            method = value
        elif key == HTTP_HOST:
            authority = value
        elif key.startswith(HTTP_HEADER + ":"):
            extra.append((key.split(":", 1)[1], value))
    parts = urlsplit(req.dest)
    authority = authority or parts.netloc
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    websocket = req.type == ConnectionType.WEBSOCKET
    headers = [(":method", method), (":scheme", parts.scheme or "http"),
               (":authority", authority), (":path", path)]
    if websocket:
        headers.append((UPGRADE_HEADER, "websocket"))
    headers += [(n.lower(), v) for n, v in extra if n.lower() not in _H2_DROP]
    return headers, websocket or request_has_body(extra)


def connect_response(status: int, headers: Headers, *, websocket: bool) -> bytes:
    """Preamble + ConnectResponse bytes for an HTTP/2 response head from cloudflared.

    cloudflared rewrites a websocket's 101 to 200; the handshake headers it serializes
    (Sec-Websocket-Accept) tell an accepted upgrade from an origin's plain 200.
    """
    fields = dict((n.lower(), v) for n, v in headers if not n.startswith(":"))
    meta_text = fields.get(RESPONSE_META, "")
    try:
        meta = json.loads(meta_text) if meta_text else {}
    except ValueError:
        meta = {}
    src = meta.get("src") if isinstance(meta, dict) else None
    if src == "cloudflared":
        return encode_connect_response(ConnectResponse(
            error=f"the connector could not serve the request (HTTP/2 status {status})",
            metadata=[]))
    origin = decode_serialized_headers(fields.get(RESPONSE_HEADERS, ""))
    if websocket and status == 200 and any(
            n.lower() == "sec-websocket-accept" for n, _ in origin):
        status = 101
    return encode_connect_response(build_connect_response(status, origin))
