"""Where nbtunnel keeps state by default (`NBTUNNEL_HOME`, else ~/.nbtunnel)."""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    env = os.environ.get("NBTUNNEL_HOME")
    return Path(env).expanduser() if env else Path.home() / ".nbtunnel"
