"""Small synchronous helpers shared by the notebook tests."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable


def fetch(front_port: int, hostname: str, path: str = "/", timeout: float = 10) -> tuple[int, str]:
    """GET through the edge's public front with the tunnel's Host header."""
    req = urllib.request.Request(f"http://127.0.0.1:{front_port}{path}",
                                 headers={"Host": hostname})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_until(cond: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
