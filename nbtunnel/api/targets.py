"""What users type, parsed once for the CLI, the API and the magic: HOST:PORT and targets.

`parse_host_port` reads `127.0.0.1:7844`, `[::1]:9` or `edge.example` (default port);
`normalize_target` turns `8888`, `localhost:8888`, a URL, `hello_world` or `http_status:404`
into the ingress service string the connector runs.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from nbtunnel.api.errors import AddressError, TargetError
from nbtunnel.connector.ingress import Ingress, IngressError

_HOST_PORT = re.compile(r"\[(?P<v6>[^\]]+)\](?::(?P<p6>\d+))?"
                        r"|(?P<host>[^:\[\]\s]+)(?::(?P<port>\d+))?")


def parse_host_port(text: str, default_port: int) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `host` (then default_port); AddressError otherwise."""
    m = _HOST_PORT.fullmatch(text.strip())
    if not m:
        raise AddressError(f"expected HOST:PORT, got {text!r}")
    host = m.group("v6") or m.group("host")
    port = int(m.group("p6") or m.group("port") or default_port)
    if not 0 <= port < 65536:
        raise AddressError(f"port {port} in {text!r} is out of range 0-65535")
    return host, port


SCHEMES = ("http", "https", "ws", "wss", "tcp", "ssh", "rdp", "smb")


def normalize_target(target: int | str) -> str:
    """8888, "8888", "localhost:8888", a URL, hello_world, http_status:404 -> ingress service.

    Anything else is a TargetError naming what was expected: a bare word (`notaport`), a
    negative or out-of-range port, an unsupported scheme (`ftp://x`)."""
    text = str(target).strip()
    if isinstance(target, bool) or not text:
        raise TargetError(f"invalid tunnel target {target!r}: {_EXPECTED}")
    if text.lstrip("-").isdigit():
        if not 0 < int(text) < 65536:
            raise TargetError(f"port {text} is out of range 1-65535")
        text = f"http://localhost:{text}"
    elif text == "hello-world":
        text = "hello_world"
    elif text != "hello_world" and not text.startswith(("http_status:", "unix:", "unix+tls:")):
        if "://" not in text:
            host, sep, port = text.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise TargetError(f"invalid tunnel target {target!r}: {_EXPECTED}")
            text = "http://" + text
        scheme = text.split("://", 1)[0].lower()
        if scheme not in SCHEMES:
            raise TargetError(f"invalid tunnel target {target!r}: unsupported scheme "
                              f"{scheme!r} (use {', '.join(SCHEMES)})")
        text = text.rstrip("/")
    try:
        if "://" in text:
            parts = urlsplit(text)
            if not parts.hostname or parts.port == 0:
                raise ValueError("no host")
        Ingress.single(text)
    except ValueError as exc:  # urlsplit: bad port
        raise TargetError(f"invalid tunnel target {target!r}: {exc}") from exc
    except IngressError as exc:
        raise TargetError(f"invalid tunnel target {target!r}: {exc}") from exc
    return text


_EXPECTED = ("expected a port (8888), HOST:PORT, a URL (http://localhost:8888), hello_world or "
             "http_status:NNN")
