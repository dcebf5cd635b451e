"""Opt-in memory diagnostics for soaks: where does a long-running edge or connector grow?

``NBTUNNEL_MEMDEBUG=/path/prefix`` makes the process append, every
``NBTUNNEL_MEMDEBUG_EVERY`` seconds (default 30), a report to ``/path/prefix.<pid>.txt``: RSS,
the live object count per type (``gc``) and what changed since the previous report, and, with
``NBTUNNEL_MEMDEBUG_FRAMES=N`` (tracemalloc started after start-up with N frames), the
allocation sites whose memory grew the most. glibc's malloc statistics tell memory in use from
memory freed but kept (fragmentation); ``NBTUNNEL_MEMDEBUG_TRIM=1`` calls ``malloc_trim`` after
each report to see how much of the RSS the allocator could give back.
``NBTUNNEL_MEMDEBUG_REFS=QuicStream,Task`` adds, for those class names, what keeps the newest
instances alive (referrer chains, objgraph-style).
The reports are taken by a daemon thread (it holds the GIL while it counts, so the process
pauses for a moment); off by default, for measuring leaks, not for production.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import gc
import os
import sys
import threading
import time
import tracemalloc
import types
from collections import Counter
from pathlib import Path

ENV = "NBTUNNEL_MEMDEBUG"
TOP = 40


def _rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def malloc_stats() -> str:
    """glibc's view: bytes malloc'd and in use vs held free (fragmentation), mmapped chunks.
    Python's small objects live in their own mmapped arenas and are not counted here."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
    except (OSError, AttributeError):
        return "malloc: n/a"
    mib = 2**20
    return (f"malloc: in use {info.uordblks / mib:.1f} MiB, free in heap "
            f"{info.fordblks / mib:.1f} MiB ({info.ordblks} chunks), heap {info.arena / mib:.1f}"
            f" MiB, mmapped {info.hblkhd / mib:.1f} MiB ({info.hblks} chunks)")


def rss_by_mapping() -> str:
    """Where the RSS lives (/proc/self/smaps): the malloc heap, 1 MiB anonymous mappings
    (Python's object arenas), other anonymous ones (big malloc chunks, thread arenas,
    extension allocators) and files (code, shared libraries)."""
    kinds: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    kind = "other"
    try:
        with open("/proc/self/smaps") as f:
            for line in f:
                head = line.split()
                if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                    start, end = (int(x, 16) for x in head[0].split("-"))
                    path = head[5] if len(head) > 5 else ""
                    if path == "[heap]":
                        kind = "heap"
                    elif path.startswith("/"):
                        kind = "files"
                    elif path:
                        kind = "other"
                    else:
                        kind = "arenas" if end - start == 1 << 20 else "anon"
                    counts[kind] += 1
                elif head[0] == "Rss:":
                    kinds[kind] += int(head[1])
    except OSError:
        return "rss by mapping: n/a"
    return "rss by mapping (MiB): " + ", ".join(
        f"{k} {kinds[k] / 1024:.1f} ({counts[k]})" for k in ("heap", "arenas", "anon", "files",
                                                             "other"))


def malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def type_counts() -> Counter[str]:
    """Live gc-tracked objects per type name; coroutines also by where they are suspended
    (``coroutine@qualname:line``), since a leaked one says which code forgot it."""
    counts: Counter[str] = Counter()
    for obj in gc.get_objects():
        cls = type(obj)
        counts[f"{cls.__module__}.{cls.__qualname__}"] += 1
        if isinstance(obj, types.CoroutineType):
            frame = obj.cr_frame
            where = f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno}" \
                if frame is not None else "done"
            counts[f"coroutine@{obj.cr_code.co_qualname} {where}"] += 1
    return counts


def _fields(obj: object) -> dict[str, object] | None:
    state = getattr(obj, "__dict__", None)
    if state is None:
        slots = [k for c in type(obj).__mro__ for k in getattr(c, "__slots__", ())
                 if isinstance(k, str) and not k.startswith("__")]
        if slots:
            state = {k: getattr(obj, k, "?") for k in slots}
        elif type(obj).__module__ not in ("builtins", "_asyncio"):  # extension types
            state = {k: v for k in dir(obj) if not k.startswith("__")
                     and not callable(v := getattr(obj, k, None))}
    return state


def _describe(obj: object, nested: bool = True) -> str:
    cls = type(obj)
    name = f"{cls.__module__}.{cls.__qualname__}"
    if isinstance(obj, dict):
        return f"{name}(len={len(obj)}, keys={list(obj)[:4]!r:.80})"
    if isinstance(obj, (list, tuple, set, frozenset, collections.deque)):
        return f"{name}(len={len(obj)})"
    if isinstance(obj, types.FrameType):
        return f"frame {obj.f_code.co_qualname} {Path(obj.f_code.co_filename).name}:" \
               f"{obj.f_lineno}"
    if isinstance(obj, types.CoroutineType):
        return f"coroutine {obj.cr_code.co_qualname}"
    state = _fields(obj)
    if state is None:
        return f"{name} {obj!r:.100}"
    shown = []
    for k, v in list(state.items())[:16]:
        if nested and _fields(v) is not None and not isinstance(v, type):
            shown.append(f"{k}={_describe(v, nested=False)}")
        else:
            shown.append(f"{k}={v!r:.60}")
    return f"{name}({', '.join(shown)})"


def back_references(target: object, depth: int = 4, width: int = 3) -> list[str]:
    """Who keeps ``target`` alive: referrers, their referrers, ... (``depth`` levels, the
    first ``width`` at each), skipping the frames and lists this inspection made itself."""
    lines = ["    " + _describe(target)]
    ignore = {id(target), id(sys._getframe()), id(lines)}

    def walk(obj: object, level: int) -> None:
        ignore.add(id(sys._getframe()))
        referrers = gc.get_referrers(obj)
        ignore.add(id(referrers))
        shown = 0
        for ref in referrers:
            if id(ref) in ignore or shown == width:
                continue
            shown += 1
            ignore.add(id(ref))
            lines.append("    " + "  " * (level + 1) + "<- " + _describe(ref, nested=False))
            if level + 1 < depth and not isinstance(ref, types.ModuleType):
                walk(ref, level + 1)

    walk(target, 0)
    return lines


def largest_containers(top: int = 6, skip: tuple[object, ...] = ()) -> list[str]:
    """The biggest lists, dicts, sets and deques and who holds each (``skip``: the caller's
    own): a container that only grows is the usual leak whose elements (ints, bytes) gc does
    not track."""
    mine = {id(o) for o in skip}
    sized = [(len(o), o) for o in gc.get_objects()
             if isinstance(o, (list, dict, set, collections.deque)) and id(o) not in mine]
    sized.sort(key=lambda pair: pair[0], reverse=True)
    biggest = [o for _, o in sized[:top]]
    del sized
    lines = ["-- largest containers and their holders"]
    mine.add(id(biggest))
    for obj in biggest:
        holders = [r for r in gc.get_referrers(obj) if id(r) not in mine
                   and not isinstance(r, types.FrameType)][:2]
        mine.add(id(holders))
        held_by = "; ".join(_describe(h, nested=False)[:160] for h in holders)
        lines.append(f"  {_describe(obj, nested=False)[:80]} <- {held_by}")
    return lines


class MemoryReporter:
    """Writes the periodic report; ``report()`` can also be called directly (tests, REPL).

    The first report comes before start-up; the second is the baseline every later one is
    compared with, and starts tracemalloc when ``frames`` is set (tracing start-up would
    slow it several-fold and only show imports); the third takes the baseline snapshot."""

    def __init__(self, path: Path, every: float, frames: int = 0, trim: bool = False,
                 refs: tuple[str, ...] = ()) -> None:
        self.path = path
        self.trim = trim
        self.refs = refs
        self.every = every
        self.frames = frames
        self._t0 = time.monotonic()
        self._base_snapshot: tracemalloc.Snapshot | None = None
        self._last: Counter[str] = Counter()
        self._base: Counter[str] = Counter()
        self._reports = 0

    def report(self) -> None:
        counts = type_counts()
        self._reports += 1
        if self._reports <= 2:
            self._base = counts
        lines = [f"=== t={time.monotonic() - self._t0:.0f}s rss={_rss_mib():.1f}MiB "
                 f"objects={sum(counts.values())}", f"-- {malloc_stats()}",
                 f"-- {rss_by_mapping()}"]
        if self.trim:
            malloc_trim()
            lines.append(f"-- after malloc_trim: rss={_rss_mib():.1f}MiB; {malloc_stats()}")
        grown = counts.copy()
        grown.subtract(self._base)
        lines.append("-- type counts: +since the baseline (+since the last report) [now]")
        for name, grew in grown.most_common(TOP):
            if grew <= 0:
                break
            lines.append(f"  {grew:+8d} ({counts[name] - self._last[name]:+d}) "
                         f"[{counts[name]}] {name}")
        self._last = counts
        lines.extend(largest_containers(skip=(counts, grown, self._base, self.__dict__)))
        if self.refs and self._reports > 2:
            lines.extend(self._back_references())
        if tracemalloc.is_tracing():
            lines.extend(self._traced())
        elif self.frames and self._reports == 2:
            tracemalloc.start(self.frames)
        with self.path.open("a") as f:
            f.write("\n".join(lines) + "\n")

    def _back_references(self) -> list[str]:
        """For each type named in ``refs``: the newest two instances and what holds them."""
        lines = []
        for name in self.refs:
            found = [o for o in gc.get_objects() if type(o).__qualname__ == name]
            lines.append(f"-- back references of {name} ({len(found)} live)")
            newest = found[-2:]
            del found
            for obj in newest:
                lines.extend(back_references(obj))
            del newest
        return lines

    def _traced(self) -> list[str]:
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)])
        if self._base_snapshot is None:
            self._base_snapshot = snap
        traced, peak = tracemalloc.get_traced_memory()
        lines = [f"-- tracemalloc: traced {traced / 2**20:.1f} MiB (peak {peak / 2**20:.1f});"
                 " growth since the baseline snapshot, by allocation site"]
        for stat in snap.compare_to(self._base_snapshot, "traceback")[:TOP]:
            if stat.size_diff <= 0:
                break
            frames = " <- ".join(f"{Path(f.filename).name}:{f.lineno}"
                                 for f in stat.traceback[:8])
            lines.append(f"  {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks"
                         f"  {frames}")
        return lines

    def _run(self) -> None:
        while True:
            self.report()
            time.sleep(self.every)


def install_from_env() -> MemoryReporter | None:
    """Start the reporter thread if ``NBTUNNEL_MEMDEBUG`` is set; else do nothing."""
    prefix = os.environ.get(ENV)
    if not prefix:
        return None
    every = float(os.environ.get(f"{ENV}_EVERY", "30"))
    frames = int(os.environ.get(f"{ENV}_FRAMES", "0"))
    trim = os.environ.get(f"{ENV}_TRIM", "") == "1"
    refs = tuple(filter(None, os.environ.get(f"{ENV}_REFS", "").split(",")))
    reporter = MemoryReporter(Path(f"{prefix}.{os.getpid()}.txt"), every, frames, trim, refs)
    threading.Thread(target=reporter._run, name="memdebug", daemon=True).start()
    return reporter
