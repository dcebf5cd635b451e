"""One timer for every stream still waiting for its request head.

Each edge-opened stream gets ``timeout`` seconds to deliver its head; a stream that does not
is reset. ``asyncio.timeout()`` per stream pushes a timer onto the loop's heap and cancels it
again for every request, although nearly every head is already there when the stream is
accepted. Here the waiting tasks sit in one dict in arrival order, which is deadline order
(every stream gets the same timeout), and a single timer, armed while the dict is not empty,
cancels the overdue ones: arming and disarming cost a dict store and a pop.

    watch.arm(task)
    try:
        head = await stream.receive_request()
    except asyncio.CancelledError:
        if watch.expired(task):   # this watch's cancellation, consumed
            ...                   # the head timed out
        raise
    finally:
        watch.disarm(task)
"""

from __future__ import annotations

import asyncio
from typing import Any

_SLACK = 0.001  # the loop may run a timer up to its clock resolution early


class HeadWatch:
    """Deadlines of ``timeout`` seconds for the tasks armed on it (see module docstring)."""

    __slots__ = ("_expired", "_handle", "_loop", "_timeout", "_waiting")

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._waiting: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def arm(self, task: asyncio.Task[Any]) -> None:
        """Cancel ``task`` ``timeout`` seconds from now unless `disarm()` comes first."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        when = loop.time() + self._timeout
        self._waiting[task] = when
        if self._handle is None:
            self._handle = loop.call_at(when, self._fire)

    def disarm(self, task: asyncio.Task[Any]) -> None:
        self._waiting.pop(task, None)

    def expired(self, task: asyncio.Task[Any]) -> bool:
        """After a CancelledError under this watch: True when the watch caused it (the
        cancellation is then consumed); False when someone else cancelled the task."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() == 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def close(self) -> None:
        self._waiting.clear()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        loop = self._loop
        assert loop is not None
        now = loop.time() + _SLACK
        waiting = self._waiting
        while waiting:
            task, when = next(iter(waiting.items()))
            if when > now:
                self._handle = loop.call_at(when, self._fire)
                return
            del waiting[task]
            if not task.done():
                self._expired.add(task)
                task.cancel()
