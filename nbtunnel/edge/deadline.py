"""A re-armable deadline whose timer is lazy: moving it costs a float store.

`asyncio.timeout()` schedules a timer and cancels it for every wait it guards; the front waits
under a deadline several times per request (the keep-alive read, the head, the connector's
answer), so that is a timer pushed onto and cancelled from the loop's heap each time. Here one
timer per client connection wakes up at the earliest armed deadline; if the deadline has moved
later meanwhile, it re-arms itself for the new one, and if nothing is armed it lapses. On a
kept-alive connection that is about one timer per keep-alive period, not several per request.

    deadline.arm(loop.time() + 30)
    try:
        data = await reader.read(n)
    except asyncio.CancelledError:
        if deadline.expired():   # this deadline's cancellation, consumed
            ...                  # the timeout
        raise
    finally:
        deadline.disarm()
"""

from __future__ import annotations

import asyncio

_SLACK = 0.001  # the loop may run a timer up to its clock resolution early


class Deadline:
    """One deadline for the task that creates it (see module docstring); any task may move it."""

    __slots__ = ("_at", "_expired", "_handle", "_loop", "_when", "task")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        """The task this deadline cancels."""
        self._when: float | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._at = 0.0  # when the handle fires
        self._expired = False

    @property
    def armed(self) -> bool:
        return self._when is not None

    def arm(self, when: float) -> None:
        """Cancel the task at ``when`` (loop time) unless `disarm()` comes first."""
        self._when = when
        handle = self._handle
        if handle is None or self._at > when:
            if handle is not None:
                handle.cancel()
            self._handle = self._loop.call_at(when, self._fire)
            self._at = when

    def disarm(self) -> None:
        self._when = None

    def expired(self) -> bool:
        """After a CancelledError under this deadline: True when the deadline caused it (the
        cancellation is then consumed); False when someone else cancelled the task."""
        if not self._expired:
            return False
        self._expired = False
        assert self.task is not None
        return self.task.uncancel() == 0

    def close(self) -> None:
        self._when = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        when = self._when
        if when is None:
            return  # disarmed: the next arm() schedules again
        if when > self._loop.time() + _SLACK:
            self._handle = self._loop.call_at(when, self._fire)  # moved later meanwhile
            self._at = when
            return
        self._when = None
        if self.task is not None and not self.task.done():
            self._expired = True
            self.task.cancel()
