"""A clock tests advance by hand, for deadlines and expiries that are minutes long."""

from __future__ import annotations

import asyncio

from nbtunnel.edge.clock import Clock


class ManualClock(Clock):
    """Time stands still until :meth:`advance`; sleepers wake when their time has come."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        entry = (self.now + seconds, asyncio.get_running_loop().create_future())
        self._sleepers.append(entry)
        try:
            await entry[1]
        finally:
            self._sleepers.remove(entry)

    def sleeping(self, seconds: float | None = None) -> int:
        """How many tasks sleep (for exactly ``seconds`` from now, if given)."""
        return sum(1 for due, _ in self._sleepers
                   if seconds is None or abs(due - self.now - seconds) < 1e-9)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for due, fut in self._sleepers:
            if due <= self.now and not fut.done():
                fut.set_result(None)
