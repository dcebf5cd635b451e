"""The minimum request-body rate of the public front, sans I/O (bytes and ``now`` in).

The body deadline alone bounds silence: a client that drips one byte just inside it holds an
origin connection for as long as it likes. This check bounds the average instead: once the
edge has waited `grace` seconds for body bytes in total, a body averaging fewer than
`min_rate` bytes per second of that wait is refused (408). Only time spent waiting for the
client counts: while the edge itself is held up (the connector's back-pressure) the clock of
this check stands still, so a slow origin never gets a visitor refused.
"""

from __future__ import annotations


class BodyRate:
    """One request body. Call :meth:`waiting` when a read starts and :meth:`received` when
    it returns; a non-None answer of :meth:`received` is the refusal's reason."""

    def __init__(self, min_rate: float, grace: float) -> None:
        self.min_rate = min_rate
        self.grace = grace
        self.received_bytes = 0
        self.waited = 0.0
        """Seconds spent waiting for the client so far."""
        self._since: float | None = None

    def waiting(self, now: float) -> None:
        """A read for body bytes starts."""
        self._since = now

    def received(self, size: int, now: float) -> str | None:
        """``size`` bytes arrived (0: the read ended without bytes); the reason to refuse the
        body when its average fell below the minimum after the grace period, else None."""
        if self._since is not None:
            self.waited += max(now - self._since, 0.0)
            self._since = None
        self.received_bytes += size
        if self.min_rate <= 0 or self.waited < self.grace:
            return None
        rate = self.received_bytes / self.waited
        if rate >= self.min_rate:
            return None
        return (f"The request body is too slow: {self.received_bytes} bytes in "
                f"{self.waited:.0f} s ({rate:.0f} bytes/s; the minimum is "
                f"{self.min_rate:g} bytes/s).")
