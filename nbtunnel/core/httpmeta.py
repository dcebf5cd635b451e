"""HTTP request/response heads <-> ConnectRequest/ConnectResponse metadata (QUIC data plane).

Keys as cloudflared uses them: ``HttpMethod``, ``HttpHost``, ``HttpHeader:<Name>`` (one
entry per value, order kept) and ``HttpStatus`` in responses.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from nbtunnel.core.errors import DecodeError
from nbtunnel.core.streams import ConnectionType, ConnectRequest, ConnectResponse

HTTP_METHOD = "HttpMethod"
HTTP_HOST = "HttpHost"
HTTP_HEADER = "HttpHeader"
HTTP_STATUS = "HttpStatus"


@dataclass
class HttpRequestHead:
    method: str
    host: str
    dest: str
    headers: list[tuple[str, str]]
    websocket: bool

    @property
    def target(self) -> str:
        """Path and query of ``dest`` (which may be absolute or path-only)."""
        parts = urlsplit(self.dest)
        path = parts.path or "/"
        return f"{path}?{parts.query}" if parts.query else path


def build_connect_request(method: str, host: str, target: str, headers: list[tuple[str, str]],
                          *, scheme: str = "https", websocket: bool = False) -> ConnectRequest:
    metadata = [(HTTP_METHOD, method), (HTTP_HOST, host)]
    metadata += [(f"{HTTP_HEADER}:{name}", value) for name, value in headers]
    return ConnectRequest(
        dest=f"{scheme}://{host}{target}",
        type=ConnectionType.WEBSOCKET if websocket else ConnectionType.HTTP,
        metadata=metadata,
    )


HEADER_PREFIX = HTTP_HEADER + ":"
"""The metadata key prefix of an HTTP field ("HttpHeader:Name")."""
HEADER_PREFIX_LEN = len(HEADER_PREFIX)


def _header(key: str) -> str | None:
    """Header name of an ``HttpHeader:<Name>`` key; cloudflared requires exactly one colon."""
    if not key.startswith(HEADER_PREFIX):
        return None
    name = key[len(HEADER_PREFIX):]
    if not name or ":" in name:
        raise DecodeError(f"bad metadata key {key!r}")
    return name


def parse_http_request(req: ConnectRequest) -> HttpRequestHead:
    method: str | None = None
    host: str | None = None
    headers: list[tuple[str, str]] = []
    append = headers.append
    for key, value in req.metadata:
        if key.startswith(HEADER_PREFIX):  # _header() inlined: one call per request field
            name = key[HEADER_PREFIX_LEN:]
            if not name or ":" in name:
                raise DecodeError(f"bad metadata key {key!r}")
            append((name, value))
        elif key == HTTP_METHOD:
            method = value
        elif key == HTTP_HOST:
            host = value
    if not method:
        raise DecodeError("ConnectRequest has no HttpMethod")
    if host is None:
        try:
            host = urlsplit(req.dest).netloc
        except ValueError as exc:
            raise DecodeError(f"bad dest {req.dest!r}") from exc
    return HttpRequestHead(method, host, req.dest, headers,
                           req.type == ConnectionType.WEBSOCKET)


def request_has_body(headers: list[tuple[str, str]]) -> bool:
    """cloudflared forwards a body only with a non-zero Content-Length or chunked encoding."""
    for name, value in headers:
        lname = name.lower()
        if lname == "content-length":
            try:
                if int(value.strip()) != 0:
                    return True
            except ValueError:
                continue
        elif lname == "transfer-encoding" and "chunked" in value.lower():
            return True
    return False


def build_connect_response(status: int, headers: list[tuple[str, str]]) -> ConnectResponse:
    metadata = [(HTTP_STATUS, str(status))]
    metadata += [(f"{HTTP_HEADER}:{name}", value) for name, value in headers]
    return ConnectResponse(error="", metadata=metadata)


def error_connect_response(message: str) -> ConnectResponse:
    return ConnectResponse(error=message, metadata=[])


def parse_http_response(resp: ConnectResponse) -> tuple[int, list[tuple[str, str]]]:
    """Status and headers; the caller checks ``resp.error`` first."""
    status: int | None = None
    headers: list[tuple[str, str]] = []
    for key, value in resp.metadata:
        if key == HTTP_STATUS:
            if not (len(value) == 3 and value.isascii() and value.isdigit()):
                raise DecodeError(f"bad HttpStatus {value!r}")
            status = int(value)
            if status < 100:
                raise DecodeError(f"bad HttpStatus {value!r}")
        else:
            name = _header(key)
            if name is not None:
                headers.append((name, value))
    if status is None:
        raise DecodeError("ConnectResponse has no HttpStatus")
    return status, headers
