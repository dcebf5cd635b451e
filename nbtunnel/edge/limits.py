"""The public front's limits and deadlines, in one place (see docs/refusals.md).

Defaults follow Cloudflare's edge where it documents one (100 s for the origin's response
head, then 524) and common servers elsewhere. Tests pass short values.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FrontLimits:
    head_timeout: float = 30.0
    """Whole request head, from its first byte to its blank line (not per read): 408."""
    body_timeout: float = 30.0
    """Longest silence while a request body is still expected: 408 (or a closed connection
    once the response has started)."""
    min_body_rate: float = 500.0
    """Bytes per second a request body must average once the edge has waited
    `body_rate_grace` seconds for it (only time spent waiting for the client counts): 408.
    0: no minimum (`nbtunnel edge --min-body-rate`)."""
    body_rate_grace: float = 20.0
    """Waiting time before `min_body_rate` applies (slow starts, small bodies)."""
    response_timeout: float = 100.0
    """Wait for the connector's response head; then 524, like Cloudflare's edge."""
    send_timeout: float = 60.0
    """How long a client may leave a response unread (the socket full, or its HTTP/2 window
    closed) without taking a byte; then the connection is closed (HTTP/2: the stream is
    reset, or the connection closed) and the data stream reset."""
    keepalive_timeout: float = 75.0
    """Idle time between requests on a kept-alive connection; then it is closed."""
    max_head_bytes: int = 64 * 1024
    """Request line plus header fields: 431."""
    max_fields: int = 256
    """Header fields per request: 431."""
    max_metadata_bytes: int = 240 * 1024
    """Encoded ConnectRequest (the connector refuses more than 256 KiB): 431."""
