"""Golden-vector helpers for the protocol-core tests (unique name: no clash with other dirs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "nbtunnel" / "core" / "schema"


def vector(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def vector_index() -> dict[str, Any]:
    return {f["file"]: f for f in json.loads((VECTORS / "index.json").read_text())["files"]}


def frame_segments(segments: list[bytes]) -> bytes:
    """Standard stream framing for a list of raw segments."""
    head = (len(segments) - 1).to_bytes(4, "little")
    head += b"".join((len(s) // 8).to_bytes(4, "little") for s in segments)
    if len(head) % 8:
        head += bytes(4)
    return head + b"".join(segments)
