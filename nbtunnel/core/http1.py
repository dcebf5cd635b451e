"""HTTP/1.1 field rules shared by the edge, the connector and the notebook relay.

One hop-by-hop table (RFC 9110 7.6.1 plus the legacy names proxies still see), the header
names a `Connection` header nominates, field-name/value validity (RFC 9110 5.1, 5.5) and the
status-line/head encoding the edge writes. Pure functions over ``str`` header lists (names and
values decoded as Latin-1 where they came from bytes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from http import HTTPStatus

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade",
})
"""Fields that describe one connection, never forwarded to the next hop (plus whatever a
``Connection`` header nominates: see :func:`connection_nominated`)."""

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00\r\n]")

Headers = list[tuple[str, str]]
"""Field values are ``str`` holding the wire bytes: UTF-8 decoded with surrogate escapes for
the bytes that are not (so Latin-1 and other raw bytes survive the tunnel unchanged)."""


match_token = _TOKEN.fullmatch
"""``match_token(name)``: a match when ``name`` is a valid field name (hot paths call it
directly: no wrapper call)."""
search_bad_value = _BAD_VALUE.search
"""``search_bad_value(value)``: a match when ``value`` has a NUL, CR or LF."""


def is_token(name: str) -> bool:
    """A valid field name (RFC 9110 tchar+)."""
    return match_token(name) is not None


def valid_value(value: str) -> bool:
    """No NUL, CR or LF: a value that cannot inject lines or truncate a C parser."""
    return search_bad_value(value) is None


def connection_nominated(headers: Iterable[tuple[str, str]]) -> frozenset[str]:
    """Lower-case names a ``Connection`` header lists (hop-by-hop by nomination)."""
    names: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            names.update(t.strip().lower() for t in value.split(",") if t.strip())
    return frozenset(names)


def end_to_end(headers: Iterable[tuple[str, str]], *, keep: frozenset[str] = frozenset()
               ) -> Headers:
    """``headers`` without hop-by-hop fields (fixed and nominated), except those in ``keep``."""
    headers = list(headers)
    drop = (HOP_BY_HOP | connection_nominated(headers)) - keep
    return [(n, v) for n, v in headers if n.lower() not in drop]


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return {530: "Tunnel Unavailable", 524: "A Timeout Occurred"}.get(status, "Unknown")


_STATUS_LINES = {code: f"HTTP/1.1 {code} {reason(code)}\r\n" for code in range(100, 600)}
"""Every status line the front can send (checked statuses are 100-599), built once."""


def encode_head(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    """Status line and fields of an HTTP/1.1 response; the caller validated the fields."""
    line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} {reason(status)}\r\n"
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers])
    return f"{line}{fields}\r\n".encode("utf-8", "surrogateescape")


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def strip_port(host: str) -> str:
    """A Host value without its port (IPv6 brackets removed)."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def http_url(hostname: str, port: int) -> str:
    """A public hostname's plain-HTTP URL on a front listening on `port`."""
    return f"http://{hostname}" + ("" if port == 80 else f":{port}")
