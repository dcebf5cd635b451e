"""A clock tests advance by hand, for deadlines and expiries that are minutes long."""

from __future__ import annotations

import asyncio
import time

from nbtunnel.edge.clock import Clock


class ManualClock(Clock):
    """Time stands still until :meth:`advance`; sleepers wake when their time has come."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start  # stored timestamps stay comparable
        self._sleepers: list[tuple[float, float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        entry = (self.now + seconds, seconds, asyncio.get_running_loop().create_future())
        self._sleepers.append(entry)
        try:
            await entry[2]
        finally:
            self._sleepers.remove(entry)

    def sleeping(self, seconds: float | None = None) -> int:
        """How many tasks sleep and are not due yet (those that asked for ``seconds``, if
        given)."""
        return sum(1 for due, asked, fut in self._sleepers
                   if not fut.done() and due > self.now and seconds in (None, asked))

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for due, _, fut in self._sleepers:
            if due <= self.now and not fut.done():
                fut.set_result(None)
