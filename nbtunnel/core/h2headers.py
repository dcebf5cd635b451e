"""cloudflared's HTTP/2 heads <-> the tunnel's ConnectRequest / ConnectResponse, both roles.

Over HTTP/2 the edge sends each eyeball request as an ordinary HTTP/2 request and cloudflared
answers with `:status`, the origin's headers serialized in `cf-cloudflared-response-headers`
(`b64(name):b64(value)` pairs joined by `;`, unpadded standard base64, one pair per value, so
they survive HTTP/2's header rules untouched) and a `cf-cloudflared-response-meta` saying
whether the origin or cloudflared itself answered. Each head is mapped once, here, from and to
header lists; nothing is encoded to Cap'n Proto on the way. Pure functions: no I/O.
"""

from __future__ import annotations

import binascii
import json
from urllib.parse import urlsplit

from nbtunnel.core.errors import DecodeError
from nbtunnel.core.http1 import HOP_BY_HOP, connection_nominated
from nbtunnel.core.httpmeta import (
    HEADER_PREFIX,
    HEADER_PREFIX_LEN,
    HTTP_HOST,
    HTTP_METHOD,
    build_connect_request,
    build_connect_response,
    parse_http_response,
    request_has_body,
)
from nbtunnel.core.streams import ConnectionType, ConnectRequest, ConnectResponse

UPGRADE_HEADER = "cf-cloudflared-proxy-connection-upgrade"
RESPONSE_HEADERS = "cf-cloudflared-response-headers"
RESPONSE_META = "cf-cloudflared-response-meta"
PROXY_SRC_HEADER = "cf-cloudflared-proxy-src"
"""Marks a private-routing TCP stream (the destination is the :authority)."""
META_ORIGIN = '{"src":"origin"}'
META_CLOUDFLARED = '{"src":"cloudflared"}'

Headers = list[tuple[str, str]]


def _b64(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    try:  # binascii.Error for bad base64, plain ValueError for non-ASCII text
        # base64.b64decode(validate=True) without its wrapper: one call per text
        return binascii.a2b_base64(text + _PADS[len(text) & 3], strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"bad base64 in {RESPONSE_HEADERS}: {text[:40]!r}") from exc


_PADS = ("", "===", "==", "=")  # unpadded base64 of length n needs (-n) % 4 "="


_NAMES_B64: dict[str, str] = {}
"""Header names and their base64 (names repeat from response to response; values are not
kept: they may be cookies)."""
_B64_NAMES: dict[str, str] = {}
_NAMES_MAX = 512
_NAME_CACHED_MAX = 64  # longer names (a hostile peer's) are not kept

def encode_serialized_headers(headers: Headers) -> str:
    """The serialized form cloudflared sends."""
    out = []
    names = _NAMES_B64
    for name, value in headers:
        enc = names.get(name)
        if enc is None:
            enc = _b64(name.encode("latin-1"))
            if len(name) <= _NAME_CACHED_MAX:
                if len(names) >= _NAMES_MAX:
                    names.clear()
                names[name] = enc
        out.append(f"{enc}:{_b64(value.encode('latin-1'))}")
    return ";".join(out)


def decode_serialized_headers(value: str) -> Headers:
    """Origin headers out of `cf-cloudflared-response-headers`; "" means none."""
    out: Headers = []
    if not value:
        return out
    names = _B64_NAMES
    for pair in value.split(";"):
        name, sep, val = pair.partition(":")
        if not sep or not name:
            raise DecodeError(f"bad pair in {RESPONSE_HEADERS}: {pair[:40]!r}")
        text = names.get(name)
        if text is None:
            text = _unb64(name).decode("latin-1")
            if len(name) <= _NAME_CACHED_MAX:
                if len(names) >= _NAMES_MAX:
                    names.clear()
                names[name] = text
        out.append((text, _unb64(val).decode("latin-1")))
    return out


def serializable(name: str) -> bool:
    """Whether cloudflared forwards an origin header in the serialized set."""
    low = name.lower()
    if low in ("sec-websocket-accept", "connection", "upgrade"):
        return True
    return not low.startswith((":", "cf-int-", "cf-cloudflared-", "cf-proxy-"))


# Connection-specific headers are illegal in HTTP/2 (RFC 9113 §8.2.2); Host becomes :authority.
_H2_DROP = (HOP_BY_HOP - {"trailer"}) | {"host"}


def response_fields(status: int, headers: Headers) -> list[tuple[bytes, bytes]]:
    """Edge, HTTPS front: the HTTP/2 response fields for an HTTP/1-style head that passed the
    response checks: `:status` first, names lower-cased, connection-specific fields (and those
    a Connection header nominates) dropped, values as their wire bytes."""
    drop = HOP_BY_HOP | connection_nominated(headers)
    out = [(b":status", str(status).encode())]
    out += [(n.lower().encode("latin-1"), v.encode("utf-8", "surrogateescape"))
            for n, v in headers if n.lower() not in drop]
    return out




def request_headers(req: ConnectRequest) -> tuple[Headers, bool]:
    """Edge: HTTP/2 request headers for a ConnectRequest, and whether a body (DATA) follows."""
    method = "GET"
    authority = ""
    fields: Headers = []
    has_body = False
    for key, value in req.metadata:
        if key[:HEADER_PREFIX_LEN] == HEADER_PREFIX:
            name = key[HEADER_PREFIX_LEN:].lower()
            if name not in _H2_DROP:
                fields.append((name, value))
            if name in _BODY_SIGNS:
                has_body = has_body or request_has_body([(name, value)])
        elif key == HTTP_METHOD:
            method = value
        elif key == HTTP_HOST:
            authority = value
    parts = urlsplit(req.dest)  # cached by urllib for repeated targets
    authority = authority or parts.netloc
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    websocket = req.type == ConnectionType.WEBSOCKET
    headers = [(":method", method), (":scheme", parts.scheme or "http"),
               (":authority", authority), (":path", path)]
    if websocket:
        headers.append((UPGRADE_HEADER, "websocket"))
    headers += fields
    return headers, websocket or has_body


_BODY_SIGNS = frozenset({"content-length", "transfer-encoding"})


def connect_response(status: int, headers: Headers, *, websocket: bool) -> ConnectResponse:
    """Edge: the ConnectResponse for cloudflared's HTTP/2 response head.

    cloudflared rewrites a websocket's 101 to 200; the handshake headers it serializes
    (Sec-Websocket-Accept) tell an accepted upgrade from an origin's plain 200.
    """
    fields = dict(headers)
    names = "".join(fields)
    if names != names.lower():  # HTTP/2 names are lower-case (RFC 9113 §8.2.1)
        fields = {n.lower(): v for n, v in headers}
    meta_text = fields.get(RESPONSE_META, "")
    if meta_text == META_ORIGIN:  # what every answer the origin gave says
        src: object = "origin"
    else:
        try:  # a hostile connector's header: malformed or nested 65,000 deep means "origin"
            meta = json.loads(meta_text) if meta_text else {}
        except (ValueError, RecursionError):
            meta = {}
        src = meta.get("src") if isinstance(meta, dict) else None
    if src == "cloudflared":
        return ConnectResponse(
            error=f"the connector could not serve the request (HTTP/2 status {status})",
            metadata=[])
    origin = decode_serialized_headers(fields.get(RESPONSE_HEADERS, ""))
    if status == 200:
        for n, v in origin:
            lname = n.lower()
            if lname == "sec-websocket-accept" or (lname == "upgrade"
                                                   and v.lower() == "websocket"):
                status = 101  # also for a plain request: a stream origin acks anything so
                break
    return build_connect_response(status, origin)


def connect_request(headers: Headers, *, ended: bool) -> ConnectRequest:
    """Connector: the ConnectRequest cloudflared would see for an HTTP/2 request head
    (`ended`: END_STREAM already arrived, so no body follows)."""
    method = authority = path = scheme = None  # the last of each pseudo-header wins
    upgrade: str | None = None  # the first upgrade marker counts
    proxy_src = length = False
    fields: Headers = []
    for name, value in headers:
        if name[:1] == ":":
            if name == ":method":
                method = value
            elif name == ":authority":
                authority = value
            elif name == ":path":
                path = value
            elif name == ":scheme":
                scheme = value
        elif name == UPGRADE_HEADER:
            if upgrade is None:
                upgrade = value
        else:
            fields.append((name, value))
            if name == PROXY_SRC_HEADER and value:
                proxy_src = True
            elif name == "content-length":
                length = True
    if proxy_src:
        return ConnectRequest(dest=authority or "", type=ConnectionType.TCP, metadata=[])
    websocket = upgrade is not None and upgrade.lower() == "websocket"
    if not websocket and not ended and not length:
        fields.append(("transfer-encoding", "chunked"))  # a body of unknown length follows
    return build_connect_request(
        "GET" if method is None else method, authority or "localhost:8080",
        "/" if path is None else path, fields, scheme=scheme or "http", websocket=websocket)


def response_headers(resp: ConnectResponse) -> Headers:
    """Connector: the HTTP/2 response head for a ConnectResponse (101 becomes 200)."""
    if resp.error:
        return [(":status", "502"), (RESPONSE_META, META_CLOUDFLARED)]
    if not resp.metadata:  # a private-routing TCP ack: cloudflared answers 101, sent as 200
        return [(":status", "200"), (RESPONSE_HEADERS, ""), (RESPONSE_META, META_ORIGIN)]
    status, origin = parse_http_response(resp)
    if status == 101:
        status = 200  # the upgraded stream then carries bytes both ways
    kept = [(n, v) for n, v in origin if serializable(n)]
    return [(":status", str(status)), (RESPONSE_HEADERS, encode_serialized_headers(kept)),
            (RESPONSE_META, META_ORIGIN)]
