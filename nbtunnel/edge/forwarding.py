"""Which request headers reach the connector, and which the edge adds.

Hop-by-hop fields (the fixed table and whatever `Connection` nominates) stay with the
visitor's connection, except Transfer-Encoding, which tells the connector a body follows.
Headers only the edge may set are stripped from visitors in any spelling (`Cf-Connecting-Ip`,
`cf_connecting_ip`): a client must never claim an address, a country or a ray.
`X-Forwarded-For` keeps every hop the visitor's request listed (all its fields, in order)
and gets the visitor's address appended.

Every proxied request goes through :func:`forwarded_request`, so it makes one pass over the
visitor's header list: it decodes each field, decides whether it is forwarded and builds the
tunnel metadata entry, and notes what the front needs besides (a body follows, `Expect:
100-continue`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbtunnel.core.http1 import HOP_BY_HOP, connection_nominated
from nbtunnel.core.httpmeta import HEADER_PREFIX as _PREFIX
from nbtunnel.core.httpmeta import HTTP_HOST, HTTP_METHOD, request_has_body
from nbtunnel.core.streams import ConnectionType, ConnectRequest

if TYPE_CHECKING:
    from nbtunnel.edge.request_reader import Request

RESERVED = frozenset({
    "cf-connecting-ip", "cf-connecting-ipv6", "cf-ipcountry", "cf-ray", "cf-visitor",
    "cf-worker", "cf-ew-via", "cdn-loop", "true-client-ip", "x-forwarded-proto",
})
"""Request headers the edge owns (Cloudflare sets or rejects these; see docs/refusals.md).
Matched after lower-casing and mapping `_` to `-`."""


def _spellings(name: str) -> set[bytes]:
    """Every spelling of a lower-case name with `_` or `-` at each of its dashes."""
    out = {""}
    for ch in name:
        out = {s + c for s in out for c in (("-", "_") if ch == "-" else (ch,))}
    return {s.encode() for s in out}


_RESERVED_SPELLINGS = frozenset(s for name in RESERVED for s in _spellings(name))
_DROPPED_TEXT = HOP_BY_HOP - {"transfer-encoding"}
"""Hop-by-hop fields (Transfer-Encoding stays: cloudflared reads a body only when it sees
chunked or a length)."""
_DROPPED = frozenset(n.encode() for n in _DROPPED_TEXT)
_CONNECTION = b"connection"
_CONTENT_LENGTH = b"content-length"
_EXPECT = b"expect"
_XFF = b"x-forwarded-for"
_SPECIAL = _DROPPED | _RESERVED_SPELLINGS | {_CONTENT_LENGTH, b"transfer-encoding", _EXPECT, _XFF}
"""Names that need more than a copy (lower-case bytes)."""


def forwarded_request(req: Request) -> tuple[ConnectRequest, bool, bool]:
    """The request as the connector sees it: its `ConnectRequest` (method, host, the
    visitor's forwarded headers, then the edge's own), whether a body follows (a non-zero
    Content-Length or chunked: what cloudflared reads a body for) and whether the visitor
    sent `Expect: 100-continue`."""
    client_ip, scheme = req.client_ip, req.scheme
    metadata = [(HTTP_METHOD, req.method), (HTTP_HOST, req.host)]
    chain: list[str] = []
    has_body = expects_continue = nominates = False
    for raw_name, raw_value in req.headers:
        lname = raw_name.lower()
        name = raw_name.decode("latin-1")
        # values keep their exact bytes through the metadata (non-UTF-8: surrogate escapes)
        value = raw_value.decode("utf-8", "surrogateescape")
        if lname in _SPECIAL:
            if lname == _XFF:
                chain += [hop.strip() for hop in value.split(",") if hop.strip()]
                continue
            if lname == _EXPECT:
                expects_continue = expects_continue or raw_value.lower() == b"100-continue"
                continue
            if lname in _DROPPED:
                nominates = nominates or lname == _CONNECTION
                continue
            if lname in _RESERVED_SPELLINGS:
                continue
            if lname == _CONTENT_LENGTH:
                try:
                    has_body = has_body or int(value.strip()) != 0
                except ValueError:
                    pass
            else:  # Transfer-Encoding
                has_body = has_body or "chunked" in value.lower()
        metadata.append((_PREFIX + name, value))
    if nominates:  # fields a Connection header names are hop-by-hop too
        nominated = connection_nominated(
            (n.decode("latin-1"), v.decode("utf-8", "surrogateescape"))
            for n, v in req.headers) - _DROPPED_TEXT
        if nominated:  # rarely: "Connection: keep-alive" names a field dropped already
            metadata[2:] = [(k, v) for k, v in metadata[2:]
                            if k[len(_PREFIX):].lower() not in nominated]
            has_body = request_has_body([(k[len(_PREFIX):], v) for k, v in metadata[2:]])
    chain.append(client_ip)
    metadata += [
        (_PREFIX + "Cf-Connecting-Ip", client_ip),
        (_PREFIX + "X-Forwarded-For", ", ".join(chain)),
        (_PREFIX + "X-Forwarded-Proto", scheme),
        (_PREFIX + "Cf-Visitor", f'{{"scheme":"{scheme}"}}'),
        (_PREFIX + "Cf-Ray", req.ray),
    ]
    kind = ConnectionType.WEBSOCKET if req.upgrade else ConnectionType.HTTP
    return (ConnectRequest(f"{scheme}://{req.host}{req.target}", kind, metadata),
            has_body, expects_continue)


def metadata_size(request: ConnectRequest) -> int:
    """Bytes the request's metadata takes in Cap'n Proto (an upper bound: two words per
    entry, each text NUL-terminated and word-padded), checked against the connector's limit
    without encoding the head twice."""
    size = 64 + len(request.dest)
    for key, value in request.metadata:
        size += 16 + (len(key) + 8) // 8 * 8 + (len(value) + 8) // 8 * 8
    return size
