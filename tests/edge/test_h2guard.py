"""The HTTP/2 front's guard on raw frame headers, with a hand-driven clock."""

from __future__ import annotations

from nbtunnel.edge.h2guard import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PING,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    H2Guard,
)
from tests.e2e.h2client import PREFACE, frame


def guard(budget: float = 1000.0, leak: float = 100.0) -> H2Guard:
    g = H2Guard(max_header_block=1000, budget=budget, leak=leak)
    assert g.feed(PREFACE + frame(SETTINGS, 0, 0), 0.0) is None
    return g


def test_rapid_reset_runs_out_of_budget() -> None:
    g = guard(budget=100, leak=10)
    pair = frame(HEADERS, END_STREAM | END_HEADERS, 1, b"x" * 20) + frame(
        RST_STREAM, 0, 1, b"\0\0\0\x08")
    assert g.feed(pair * 98, 0.0) is None  # 99 units with the SETTINGS
    assert g.feed(pair * 2, 0.0) == "too many RST_STREAM frames without requests"


def test_the_budget_recovers_with_time() -> None:
    g = guard(budget=100, leak=10)
    ping = frame(PING, 0, 0, b"8 bytes.")
    for second in range(1, 100):  # ten pings a second, forever: fine
        assert g.feed(ping * 10, float(second)) is None
    assert g.feed(ping * 150, 100.0) is not None


def test_acks_requests_data_and_window_updates_are_free() -> None:
    g = guard(budget=10, leak=0)
    free = (frame(PING, 1, 0, b"8 bytes.") + frame(SETTINGS, 1, 0)
            + frame(HEADERS, END_HEADERS, 1, b"h") + frame(DATA, 0, 1, b"body")
            + frame(DATA, END_STREAM, 1) + frame(WINDOW_UPDATE, 0, 0, b"\0\0\x10\0"))
    assert g.feed(free * 100, 0.0) is None
    assert g.used == 1  # the client's first SETTINGS


def test_frames_split_across_reads_are_counted_once() -> None:
    g = guard(budget=1000, leak=0)
    data = frame(PING, 0, 0, b"8 bytes.") * 50
    for i in range(len(data)):
        assert g.feed(data[i:i + 1], 0.0) is None
    assert g.used == 51


def test_header_block_over_the_limit_is_refused_before_it_ends() -> None:
    g = guard()
    assert g.feed(frame(HEADERS, 0, 1, b"h" * 600), 5.0) is None
    assert g.header_block_since == 5.0
    why = g.feed(frame(CONTINUATION, 0, 1, b"c" * 600), 6.0)
    assert why is not None and "header block over 1000 bytes" in why


def test_header_block_end_clears_its_start() -> None:
    g = guard()
    g.feed(frame(HEADERS, 0, 1, b"h" * 300) + frame(CONTINUATION, 0, 1, b"c" * 300), 1.0)
    assert g.header_block_since == 1.0
    assert g.feed(frame(CONTINUATION, END_HEADERS, 1, b"c" * 300), 2.0) is None
    assert g.header_block_since is None


def test_empty_continuations_cost_budget() -> None:
    g = guard(budget=50, leak=0)
    g.feed(frame(HEADERS, 0, 1, b"h"), 0.0)
    assert g.feed(frame(CONTINUATION, 0, 1) * 60, 0.0) is not None
