"""What the vantage points saw: one flat record type, a thread-safe store, a printable table.

Every vantage point (mitmproxy's public and origin sides, the lab's QUIC relay, connector
events) appends :class:`Record` objects to one :class:`RecordStore`, so a notebook can put them
side by side in time order without caring which thread or library produced them.
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

VANTAGES = ("public", "tunnel", "origin", "connector", "lab")


@dataclass(frozen=True)
class Record:
    """One observation; ``ray`` ties the records of one request together across vantages."""

    vantage: str
    time: float
    plane: str  # "control" | "data" | "http" | "event"
    summary: str
    direction: str = ""  # c2e / e2c on the tunnel, request / response over HTTP
    stream_id: int | None = None
    conn_index: int | None = None
    kind: str = ""
    ray: str = ""
    fields: dict[str, object] = field(default_factory=dict, compare=False)


class RecordStore:
    """Append-only, thread-safe; vantage points run on other threads than the reader."""

    def __init__(self, limit: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._records: list[Record] = []
        self._limit = limit
        self._listeners: list[Callable[[Record], None]] = []

    def add(self, record: Record) -> None:
        with self._lock:
            self._records.append(record)
            if len(self._records) > self._limit:
                del self._records[: len(self._records) - self._limit]
            listeners = list(self._listeners)
        for listener in listeners:
            listener(record)

    def listen(self, listener: Callable[[Record], None]) -> None:
        with self._lock:
            self._listeners.append(listener)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    def snapshot(self) -> list[Record]:
        with self._lock:
            return sorted(self._records, key=lambda r: r.time)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)


class FlowTable:
    """Records as a table: ``_repr_html_`` for notebooks, ``str()`` for terminals."""

    columns = ("t (ms)", "vantage", "plane", "conn", "stream", "dir", "summary")

    def __init__(self, records: Iterable[Record], t0: float | None = None) -> None:
        self.records = list(records)
        self.t0 = t0 if t0 is not None else (self.records[0].time if self.records else 0.0)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __getitem__(self, i: int) -> Record:
        return self.records[i]

    def where(self, **match: object) -> FlowTable:
        """Filter on record attributes, e.g. ``where(vantage="tunnel", kind="call")``."""
        keep = [r for r in self.records
                if all(getattr(r, k) == v for k, v in match.items())]
        return FlowTable(keep, self.t0)

    def rows(self) -> list[tuple[str, ...]]:
        def opt(v: int | None) -> str:
            return "" if v is None else str(v)

        return [(f"{(r.time - self.t0) * 1000:.1f}", r.vantage, r.plane, opt(r.conn_index),
                 opt(r.stream_id), r.direction, r.summary) for r in self.records]

    def __str__(self) -> str:
        rows = [self.columns, *self.rows()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(self.columns) - 1)]
        lines = []
        for row in rows:
            cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
            lines.append("  ".join([*cells, row[-1]]))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<FlowTable {len(self.records)} records>\n{self}"

    def _repr_html_(self) -> str:
        colors = {"public": "#e8f0fe", "tunnel": "#fef7e0", "origin": "#e6f4ea",
                  "connector": "#f3e8fd", "lab": "#f1f3f4"}
        head = "".join(f"<th style='text-align:left'>{c}</th>" for c in self.columns)
        body = []
        for rec, row in zip(self.records, self.rows(), strict=True):
            cells = "".join(f"<td style='text-align:left'>{html.escape(c)}</td>" for c in row)
            body.append(f"<tr style='background:{colors.get(rec.vantage, '#fff')}'>{cells}</tr>")
        return (f"<table class='nbtunnel-lab-flows'><thead><tr>{head}</tr></thead>"
                f"<tbody>{''.join(body)}</tbody></table>")


def now() -> float:
    """Wall-clock seconds: mitmproxy stamps flows with time.time(), so everyone does."""
    return time.time()
