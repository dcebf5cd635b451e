"""Check every response head a connector sends before any of it reaches a visitor.

A connector is authenticated but not trusted (a quick tunnel needs no login): its status,
framing and header fields are validated here, and a head that fails becomes a 502 page with
the reason. What passes carries no hop-by-hop fields and at most one Content-Length.

:func:`check_connect_response` is what the exchange calls for every response: one pass over
the metadata for the usual head (status first, final status 200-599, token names, clean
values, no hop-by-hop field, at most one plain Content-Length); anything else goes through
`parse_http_response` and :func:`check_response_head`, which decide (the same result either
way: tests/edge/test_fast_paths.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from nbtunnel.core.errors import NbtunnelError
from nbtunnel.core.http1 import (
    HOP_BY_HOP,
    connection_nominated,
    is_token,
    match_token,
    search_bad_value,
    valid_value,
)
from nbtunnel.core.httpmeta import HEADER_PREFIX as _PREFIX
from nbtunnel.core.httpmeta import HEADER_PREFIX_LEN as _P
from nbtunnel.core.httpmeta import HTTP_STATUS, parse_http_response
from nbtunnel.core.streams import ConnectResponse


class BadResponseError(NbtunnelError):
    """The connector's response head is not something we can relay to a visitor."""

    def __init__(self, message: str, *, switched: bool = False) -> None:
        super().__init__(message)
        self.switched = switched
        """A 101 nobody asked for (the origin is a TCP service)."""


@dataclass
class CheckedHead:
    status: int
    headers: list[tuple[str, str]]
    length: int | None
    """The body length the head states (Content-Length), if any."""
    upgraded: bool
    """A 101 answering the visitor's WebSocket upgrade: raw bytes follow."""


def check_response_head(status: int, headers: list[tuple[str, str]], *,
                        upgrade_requested: bool) -> CheckedHead:
    """Validate and clean a relayed head; raises BadResponseError with the reason."""
    if not 100 <= status <= 599:
        raise BadResponseError(f"the origin's response has an invalid status {status}")
    upgraded = status == 101
    if upgraded and not upgrade_requested:
        raise BadResponseError("the origin switched protocols (101) but no upgrade was asked for",
                               switched=True)
    if 100 <= status < 200 and not upgraded:
        raise BadResponseError(f"the origin sent an interim response ({status}) as its answer")
    lengths: set[str] = set()
    for name, value in headers:
        if not is_token(name):
            raise BadResponseError(f"the origin's response has an invalid header name {name!r}")
        if not valid_value(value):
            raise BadResponseError(f"the origin's response header {name} has a NUL, CR or LF")
        if name.lower() == "content-length":
            lengths.update(v.strip() for v in value.split(","))
    length: int | None = None
    if lengths:
        if len(lengths) > 1:
            raise BadResponseError("the origin's response has conflicting Content-Length values")
        text = lengths.pop()
        if not (text.isascii() and text.isdigit()) or len(text) > 18:
            raise BadResponseError(f"the origin's response has an invalid Content-Length {text!r}")
        length = int(text)
    drop = HOP_BY_HOP | connection_nominated(headers) | {"content-length"}
    keep = frozenset({"connection", "upgrade"}) if upgraded else frozenset()
    clean = [(n, v) for n, v in headers if n.lower() not in drop - keep]
    if length is not None and not upgraded:
        clean.append(("Content-Length", str(length)))
    return CheckedHead(status, clean, None if upgraded else length, upgraded)


_FINAL = {str(code): code for code in range(200, 600)}
_FRAMING = HOP_BY_HOP | {"content-length"}


def check_connect_response(resp: ConnectResponse, *, upgrade_requested: bool) -> CheckedHead:
    """`check_response_head` of the connector's `ConnectResponse` (parsed as
    `parse_http_response` does); raises BadResponseError or DecodeError with the reason."""
    metadata = resp.metadata
    status = _FINAL.get(metadata[0][1]) if metadata and metadata[0][0] == HTTP_STATUS else None
    if status is not None:
        clean: list[tuple[str, str]] = []
        length: int | None = None
        for key, value in metadata[1:]:
            name = key[_P:]
            if key[:_P] != _PREFIX or match_token(name) is None \
                    or search_bad_value(value) is not None:
                break
            lname = name.lower()
            if lname in _FRAMING:
                if lname != "content-length" or length is not None or len(value) > 18 \
                        or not (value.isascii() and value.isdigit()):
                    break
                length = int(value)
                continue
            clean.append((name, value))
        else:
            if length is not None:
                clean.append(("Content-Length", str(length)))
            return CheckedHead(status, clean, length, False)
    status, headers = parse_http_response(resp)
    return check_response_head(status, headers, upgrade_requested=upgrade_requested)
