"""Dependency direction, checked on the source: core <- transport <- connector/edge <- cli."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "nbtunnel"

# package -> module prefixes it must never import
FORBIDDEN = {
    "core": ["asyncio", "socket", "ssl", "selectors", "threading", "subprocess", "time",
             "random", "nbtunnel.transport", "nbtunnel.edge", "nbtunnel.connector",
             "nbtunnel.cli", "qh3", "aioquic", "aiohttp"],
    "transport": ["nbtunnel.edge", "nbtunnel.connector", "nbtunnel.cli"],
    "connector": ["nbtunnel.edge", "nbtunnel.cli", "qh3", "aioquic"],
    "edge": ["nbtunnel.connector", "nbtunnel.cli", "qh3", "aioquic"],
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependency_direction(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN[package]):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_nothing_imports_the_lab() -> None:
    bad = [str(p) for p in ROOT.rglob("*.py")
           if any(n == "nbtunnel_lab" or n.startswith("nbtunnel_lab.") for n in _imports(p))]
    assert not bad


def test_only_the_transport_imports_a_quic_library() -> None:
    users = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                   if any(n.split(".")[0] in ("qh3", "aioquic") for n in _imports(p)))
    assert users and all(u.startswith("transport/") for u in users), users
