"""The dependency rule and task ownership, checked on the source (AST, no imports executed).

Layers, lowest first; a module may import its own component and anything strictly lower:

    core, home            Sans-I/O protocol; nbtunnel's state directory (imports only core)
    transport             QUIC and HTTP/2 shells, the only importer of qh3/aioquic
    connector | edge |    siblings: none imports another (access: the client of TCP services
    access                a tunnel publishes)
    api                   the Python API (Tunnel, open/stop, the loop thread)
    cli | notebook        siblings on the API: neither imports the other
    nbtunnel/__init__.py  the public face (lazy names) and `python -m nbtunnel`
    lab/nbtunnel_lab      on top; nothing in nbtunnel imports it

Also: no import cycle between modules (type-only imports under TYPE_CHECKING excepted), and no
task started outside an owner (see OWNERS).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOT = REPO / "nbtunnel"
LAB = REPO / "lab" / "nbtunnel_lab"

RANK = {"_version": 0, "core": 0, "home": 1, "transport": 2, "connector": 3, "edge": 3,
        "access": 3, "api": 4, "cli": 5, "notebook": 5, "__init__": 6, "__main__": 6, "lab": 7}

# third-party or stdlib modules a component must never import
FORBIDDEN_EXTERNAL = {
    "core": ["asyncio", "socket", "ssl", "selectors", "threading", "subprocess", "time",
             "random", "qh3", "aioquic", "aiohttp"],
    "home": ["asyncio", "socket"],
    "connector": ["qh3", "aioquic"],
    "edge": ["qh3", "aioquic"],
}
ONLY_IN = {"qh3": {"transport"}, "aioquic": {"transport"},
           "IPython": {"notebook"}, "ipywidgets": {"notebook"}, "traitlets": {"notebook"}}

# Modules allowed to start a task outside a TaskGroup, each with the owner that cancels and
# awaits it. Anything else must use `async with asyncio.TaskGroup() as tg: tg.create_task(...)`.
OWNERS = {
    "nbtunnel/api/runtime.py": "Runtime.spawn: the loop thread's task set, cancelled and "
                               "awaited at shutdown",
    "nbtunnel/edge/exchange.py": "Exchange: the response task, cancelled and awaited by close",
    "nbtunnel/edge/rest_api.py": "ControlApi: configuration pushes, awaited by aclose",
    "nbtunnel/edge/server.py": "Edge: the quick-tunnel expiry loop, cancelled and awaited by "
                               "close",
    "nbtunnel/edge/stores/pg_cache.py": "CacheListener: the change feed and its applier, "
                                        "cancelled and awaited by aclose",
    "nbtunnel/edge/presence_redis.py": "RedisPresence: heartbeat, pub/sub listener, writer and "
                                       "commands, cancelled and awaited by aclose",
    "nbtunnel/edge/peering.py": "PeerClient: one dial per edge, cancelled and awaited by aclose",
    "nbtunnel/connector/edge_connection.py": "EdgeConnection._serve_streams: the control "
                                             "reader and one task per stream, cancelled and "
                                             "awaited when the connection ends",
    "nbtunnel/connector/origin.py": "the request-body sender, cancelled and awaited by the "
                                    "response's aclose (or at once when the head fails)",
    "nbtunnel/access/forward.py": "pipe()'s two directions, cancelled and awaited by pipe; the "
                                  "stdin feeder, returned to and awaited by run_stdio",
    "nbtunnel/transport/handlers.py": "ConnectionHandlers: one handler per accepted connection "
                                      "(QUIC and HTTP/2), cancelled and awaited by close",
    "nbtunnel/access/command.py": "the stdio carrier and the stop waiter, cancelled and "
                                  "awaited by the runner",
    "nbtunnel/edge/h2front.py": "one task per HTTP/2 request stream, cancelled and awaited "
                                "when the connection ends",
    "nbtunnel/edge/h2request.py": "the request-body pump, cancelled and awaited by the "
                                  "exchange",
    "lab/nbtunnel_lab/udpshim.py": "the shim's per-client upstreams, closed by the shim",
    "lab/nbtunnel_lab/mitm.py": "mitmproxy's run task, awaited by stop",
    "lab/nbtunnel_lab/lab.py": "Lab: connector tasks, cancelled and awaited by down",
    "lab/nbtunnel_lab/labcore.py": "Lab: connector tasks, cancelled and awaited by down",
}
SPAWNERS = {"create_task", "ensure_future"}


def _sources() -> Iterator[tuple[str, Path]]:
    """(dotted module name, path) of every module in nbtunnel and the lab."""
    for base, prefix in ((ROOT, "nbtunnel"), (LAB, "nbtunnel_lab")):
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join([prefix, *parts]), path


MODULES = dict(_sources())


def _component(module: str) -> str:
    if module.startswith("nbtunnel_lab"):
        return "lab"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path) -> Iterator[tuple[str, bool]]:
    """(imported module, at module level) for every import outside `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def visit(node: ast.AST, top: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    yield from visit(sub, top)
                continue
            if isinstance(child, ast.Import):
                yield from ((a.name, top) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    name = f"{base}.{child.module}" if child.module else base
                else:
                    name = child.module or ""
                if name == "nbtunnel" and [a.name for a in child.names] == ["__version__"]:
                    name = "nbtunnel._version"  # where the face re-exports it from
                subs = [f"{name}.{a.name}" for a in child.names if f"{name}.{a.name}" in MODULES]
                if len(subs) < len(child.names):  # not only `from pkg import submodule`
                    yield name, top
                yield from ((sub, top) for sub in subs)
            inner = top and not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef |
                                           ast.Lambda)
            yield from visit(child, inner)

    yield from visit(tree, True)


IMPORTS = {m: list(_imports(m, p)) for m, p in MODULES.items()}


def _ours(name: str) -> str | None:
    """The nbtunnel module an import name resolves to (the longest known prefix)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def test_every_module_has_a_layer() -> None:
    unknown = sorted({_component(m) for m in MODULES} - set(RANK))
    assert not unknown, f"add these to RANK (and to the docstring's picture): {unknown}"


def test_dependencies_point_down() -> None:
    bad = []
    for module, imports in IMPORTS.items():
        src = _component(module)
        for name, _ in imports:
            target = _ours(name)
            if target is None or target == "nbtunnel._version":
                continue
            dst = _component(target)
            if dst != src and RANK[dst] >= RANK[src]:
                bad.append(f"{module} ({src}) imports {target} ({dst})")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("component", sorted(FORBIDDEN_EXTERNAL))
def test_forbidden_libraries(component: str) -> None:
    bad = [f"{m} imports {name}" for m, imports in IMPORTS.items()
           if _component(m) == component for name, _ in imports
           if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_EXTERNAL[component])]
    assert not bad, "\n".join(bad)


def test_libraries_have_one_home() -> None:
    bad = [f"{m} imports {name}" for m, imports in IMPORTS.items() for name, _ in imports
           if name.split(".")[0] in ONLY_IN
           and _component(m) not in ONLY_IN[name.split(".")[0]] | {"lab"}]
    assert not bad, "\n".join(bad)
    users = {_component(m) for m, imports in IMPORTS.items() for name, _ in imports
             if name.split(".")[0] in ("qh3", "aioquic")}
    assert users == {"transport"}, users


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), plus self-loops."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges.get(v, ()):
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return found


def _graph(module_level_only: bool) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module, imports in IMPORTS.items():
        for name, top in imports:
            target = _ours(name)
            if target and target != module and (top or not module_level_only):
                edges.setdefault(module, set()).add(target)
    return edges


def test_no_import_cycles() -> None:
    """Neither at import time nor through imports deferred into functions: a lazy import that
    closes a loop is a cycle postponed, not removed."""
    assert _cycles(_graph(module_level_only=True)) == []
    assert _cycles(_graph(module_level_only=False)) == []


def test_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def _task_groups(tree: ast.AST) -> set[str]:
    """Names bound to a TaskGroup: `async with asyncio.TaskGroup() as tg`, or a parameter or
    variable annotated `asyncio.TaskGroup`."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.AsyncWith | ast.With):
            for item in node.items:
                call = item.context_expr
                if (isinstance(call, ast.Call) and ast.unparse(call.func).endswith("TaskGroup")
                        and isinstance(item.optional_vars, ast.Name)):
                    names.add(item.optional_vars.id)
        elif isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
            if ast.unparse(node.annotation).endswith("TaskGroup"):
                target = node.arg if isinstance(node, ast.arg) else ast.unparse(node.target)
                names.add(target)
    return names


def _spawns(path: Path) -> list[str]:
    """Every create_task/ensure_future call not made on a TaskGroup, as `line: source`."""
    tree = ast.parse(path.read_text(), str(path))
    groups = _task_groups(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name not in SPAWNERS:
            continue
        if isinstance(func, ast.Attribute) and ast.unparse(func.value) in groups:
            continue
        found.append(f"{node.lineno}: {ast.unparse(func)}(...)")
    return found


def test_tasks_have_owners() -> None:
    """A bare create_task/ensure_future is a task nobody may cancel or await: only the owners
    listed in OWNERS may start one; everyone else uses a TaskGroup (or Runtime.spawn)."""
    bad = []
    for _, path in MODULES.items():
        rel = str(path.relative_to(REPO))
        if rel in OWNERS:
            continue
        bad += [f"{rel}:{spawn}" for spawn in _spawns(path)]
    assert not bad, "unowned tasks (use a TaskGroup, or add an owner to OWNERS):\n" + \
        "\n".join(bad)


def test_task_owner_list_is_current() -> None:
    stale = [rel for rel in OWNERS if not (REPO / rel).exists() or not _spawns(REPO / rel)]
    assert not stale, f"these no longer start bare tasks: remove them from OWNERS: {stale}"


def test_spawn_rule_catches_bare_tasks(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text("import asyncio\n"
                   "async def f(tg: asyncio.TaskGroup) -> None:\n"
                   "    tg.create_task(g())\n"
                   "    async with asyncio.TaskGroup() as group:\n"
                   "        group.create_task(g())\n"
                   "    asyncio.create_task(g())\n"
                   "    asyncio.get_running_loop().create_task(g())\n"
                   "    asyncio.ensure_future(g())\n")
    assert [s.split(":")[0] for s in _spawns(src)] == ["6", "7", "8"]
