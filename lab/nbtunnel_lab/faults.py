"""Faults the lab can inject, and the thread-safe set the relay and the UDP shim consult.

mitmproxy cannot kill a raw QUIC stream in transit (``flow.kill()`` is a no-op there), so every
fault lives in the lab's own layers: stream faults in the QUIC relay, ``blackhole`` in the UDP
shim in front of it. ``Lab.inject`` runs on the caller's thread, hence the lock.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

KINDS = ("delay", "throttle", "drop", "reset", "close", "blackhole")
DIRECTIONS = ("both", "c2e", "e2c")
_ids = itertools.count(1)


class FaultError(ValueError):
    """A fault that cannot be injected (unknown kind, bad argument, vantage point off)."""


@dataclass
class Fault:
    """One injected fault; ``cancel()`` ends it early, ``duration`` ends it by itself."""

    kind: str
    direction: str = "both"
    seconds: float = 0.0  # delay: one-way latency added; blackhole: how long
    rate: float = 0.0  # throttle: bytes per second
    count: int | None = None  # drop: chunks to drop (None: all, while active)
    stream_id: int | None = None
    conn_index: int | None = None
    plane: str = "data"  # drop/delay/throttle apply to this plane ("any" for both)
    duration: float | None = None
    started: float = field(default_factory=time.monotonic)
    id: int = field(default_factory=lambda: next(_ids))
    hits: int = 0
    cancelled: bool = False

    @property
    def active(self) -> bool:
        if self.cancelled:
            return False
        if self.kind == "blackhole":
            return time.monotonic() < self.started + self.seconds
        if self.duration is not None and time.monotonic() >= self.started + self.duration:
            return False
        return self.count is None or self.hits < self.count

    def cancel(self) -> None:
        self.cancelled = True

    def matches(self, direction: str, plane: str, stream_id: int | None,
                conn_index: int | None) -> bool:
        return (self.active and self.direction in ("both", direction)
                and (plane == "any" or self.plane in ("any", plane))
                and self.stream_id in (None, stream_id)
                and self.conn_index in (None, conn_index))


def make_fault(kind: str, **params: object) -> Fault:
    """Validate and build; raises FaultError naming what is wrong."""
    if kind not in KINDS:
        raise FaultError(f"unknown fault {kind!r}; choose one of {', '.join(KINDS)}")
    try:
        fault = Fault(kind, **params)  # type: ignore[arg-type]
    except TypeError as exc:
        raise FaultError(f"bad argument for {kind}: {exc}") from exc
    if fault.direction not in DIRECTIONS:
        raise FaultError(f"direction must be one of {DIRECTIONS}, not {fault.direction!r}")
    if kind in ("delay", "blackhole") and fault.seconds <= 0:
        raise FaultError(f"{kind} needs seconds > 0")
    if kind == "throttle" and fault.rate <= 0:
        raise FaultError("throttle needs rate > 0 (bytes per second)")
    if kind == "reset" and fault.count is None:
        fault.count = 1
    return fault


class FaultSet:
    """The faults in force; readers call ``matching`` on every chunk, so it stays cheap."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults = [f for f in self._faults if f.active] + [fault]
        return fault

    def clear(self) -> None:
        with self._lock:
            for f in self._faults:
                f.cancel()
            self._faults = []

    def active(self) -> list[Fault]:
        with self._lock:
            return [f for f in self._faults if f.active]

    def matching(self, kind: str, direction: str = "both", plane: str = "data",
                 stream_id: int | None = None, conn_index: int | None = None) -> list[Fault]:
        with self._lock:
            faults = list(self._faults)
        return [f for f in faults if f.kind == kind
                and f.matches(direction, plane, stream_id, conn_index)]

    def take(self, kind: str, direction: str = "both", plane: str = "data",
             stream_id: int | None = None, conn_index: int | None = None) -> Fault | None:
        """The first matching fault, counting one hit on it (drop, reset)."""
        with self._lock:
            for f in self._faults:
                if f.kind == kind and f.matches(direction, plane, stream_id, conn_index):
                    f.hits += 1
                    return f
        return None

    def delay(self, direction: str, plane: str, stream_id: int, conn_index: int | None) -> float:
        return sum(f.seconds for f in self.matching("delay", direction, plane, stream_id,
                                                    conn_index))

    def rate(self, direction: str, plane: str, stream_id: int, conn_index: int | None) -> float:
        rates = [f.rate for f in self.matching("throttle", direction, plane, stream_id,
                                               conn_index)]
        return min(rates) if rates else 0.0

    def blackholed(self) -> bool:
        return bool(self.matching("blackhole", plane="any"))
