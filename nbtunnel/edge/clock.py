"""Time for the edge's deadlines and expiries, replaceable in tests.

Registration deadlines, rate limits and quick-tunnel expiry are minutes long; tests inject a
clock they advance by hand instead of waiting. Production uses :class:`Clock` (the event loop's
sleep, ``time.monotonic`` for intervals, ``time.time`` for stored timestamps).
"""

from __future__ import annotations

import asyncio
import time


class Clock:
    """Real time."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
