"""Received bytes queue as the library delivered them (one QUIC packet or HTTP/2 DATA frame
each) and leave in reads of up to ``n`` bytes: a bulk consumer that got one packet per read
would pay one socket write (and one wake-up) per packet downstream."""

from __future__ import annotations

from collections import deque


def take(chunks: deque[bytes], n: int) -> bytes:
    """Up to ``n`` bytes off the front of ``chunks`` (not empty), joined in one ``bytes``."""
    chunk = chunks.popleft()
    if len(chunk) >= n:
        if len(chunk) > n:
            chunks.appendleft(chunk[n:])
            return chunk[:n]
        return chunk
    if not chunks:
        return chunk
    parts = [chunk]
    missing = n - len(chunk)
    while chunks and missing:
        chunk = chunks.popleft()
        if len(chunk) > missing:
            chunks.appendleft(chunk[missing:])
            chunk = chunk[:missing]
        parts.append(chunk)
        missing -= len(chunk)
    return b"".join(parts)
