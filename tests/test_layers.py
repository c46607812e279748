"""farm's import graph, read from the source (every import: at module level, inside
functions, under ``TYPE_CHECKING``): no cycle between modules, and no module imports
one from a room below its own in the order docs/internals.md draws.

``from farm.pkg import sub`` counts as an import of the submodule ``farm.pkg.sub``
(Python runs the package's ``__init__`` first, but that is how a submodule is
reached, not a dependency of the design); ``from farm.pkg import name`` of anything
else counts as an import of ``farm.pkg``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Top to bottom, as in docs/internals.md: a module imports its own room and rooms above it.
ROOMS = [
    "farm",  # the package itself: its version, nothing else
    "farm.errors",
    "farm.states",
    "farm.addresses",
    "farm.procs",
    "farm.owner",
    "farm.spec",
    "farm.engine",
    "farm.zoo",
    "farm.export",
    "farm.result",
    "farm.transport",
    "farm.deploy",
    "farm.power",
    "farm.store",
    "farm.nightly",
    "farm.metrics",
    "farm.scheduler",
    "farm.client",
    "farm.bootstrap",
    "farm.report",
    "farm.testing",
    "farm.cli",
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in (ROOT / "farm").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The farm modules ``name`` imports anywhere in its source."""

    def known(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                targets.append(sub if sub in modules else source)
        for target in targets:
            if target == "farm" or target.startswith("farm."):
                module = known(target)
                if module is not None and module != name:
                    found.add(module)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _room(module: str) -> str:
    return max((r for r in ROOMS if module == r or module.startswith(r + ".")), key=len)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, deps = work[-1]
            for dep in deps:
                if dep not in index:
                    index[dep] = low[dep] = len(index)
                    stack.append(dep)
                    on_stack.add(dep)
                    work.append((dep, iter(sorted(graph[dep]))))
                    break
                if dep in on_stack:
                    low[node] = min(low[node], index[dep])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_every_module_has_a_room_and_every_room_a_module():
    graph = _graph()
    assert "farm.scheduler.actors" in graph and "farm.metrics.power" in graph  # it reads farm
    assert {_room(m) for m in graph} == set(ROOMS)


def test_no_import_cycle():
    graph = _graph()
    assert _cycles(graph) == [], "modules that import each other (directly or around a loop)"


def test_no_room_imports_a_room_below_it():
    graph = _graph()
    upward = sorted(
        f"{module} ({_room(module)}) imports {dep} ({_room(dep)})"
        for module, deps in graph.items()
        for dep in deps
        if ROOMS.index(_room(dep)) > ROOMS.index(_room(module))
    )
    assert upward == []


def test_the_engine_imports_only_itself_and_the_package():
    """The engine ships to boards alone (stdlib + torch): nothing else of farm."""
    graph = _graph()
    outside = {
        (module, dep)
        for module, deps in graph.items()
        if module.startswith("farm.engine")
        for dep in deps
        if dep != "farm" and not dep.startswith("farm.engine")
    }
    assert outside == set()


def test_the_rooms_are_drawn_in_the_docs_in_this_order():
    drawn = (ROOT / "docs" / "internals.md").read_text().split("```")[1]
    listed = [
        m.group(1).rstrip("/").removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for m in re.finditer(r"^(farm\S*)", drawn, re.MULTILINE)
    ]
    assert listed == ROOMS


def test_metrics_never_reach_the_scheduler_or_ray():
    for path in (ROOT / "farm" / "metrics").rglob("*.py"):
        text = path.read_text()
        assert "farm.scheduler" not in text and "import ray" not in text, path
