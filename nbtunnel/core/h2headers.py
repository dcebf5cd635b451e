"""cloudflared's serialized response headers for the HTTP/2 transport, shared by edge and connector.

Over HTTP/2 cloudflared carries the origin's headers in `cf-cloudflared-response-headers` as
`b64(name):b64(value)` pairs joined by `;` (unpadded standard base64, one pair per value), so
they survive HTTP/2's header rules untouched. Pure functions: no I/O.
"""

from __future__ import annotations

import base64
import binascii

from nbtunnel.core.errors import DecodeError

UPGRADE_HEADER = "cf-cloudflared-proxy-connection-upgrade"
RESPONSE_HEADERS = "cf-cloudflared-response-headers"
RESPONSE_META = "cf-cloudflared-response-meta"
META_ORIGIN = '{"src":"origin"}'
META_CLOUDFLARED = '{"src":"cloudflared"}'

Headers = list[tuple[str, str]]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    try:  # binascii.Error for bad base64, plain ValueError for non-ASCII text
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError(f"bad base64 in {RESPONSE_HEADERS}: {text[:40]!r}") from exc


def encode_serialized_headers(headers: Headers) -> str:
    """The serialized form cloudflared sends."""
    return ";".join(
        f"{_b64(n.encode('latin-1'))}:{_b64(v.encode('latin-1'))}" for n, v in headers
    )


def decode_serialized_headers(value: str) -> Headers:
    """Origin headers out of `cf-cloudflared-response-headers`; "" means none."""
    out: Headers = []
    if not value:
        return out
    for pair in value.split(";"):
        name, sep, val = pair.partition(":")
        if not sep or not name:
            raise DecodeError(f"bad pair in {RESPONSE_HEADERS}: {pair[:40]!r}")
        out.append((_unb64(name).decode("latin-1"), _unb64(val).decode("latin-1")))
    return out


def serializable(name: str) -> bool:
    """Whether cloudflared forwards an origin header in the serialized set."""
    low = name.lower()
    if low in ("sec-websocket-accept", "connection", "upgrade"):
        return True
    return not low.startswith((":", "cf-int-", "cf-cloudflared-", "cf-proxy-"))
