"""The architecture, pinned: which package may import which, and no import cycles inside them.

Imports flow one way (DESIGN.md, README "Architecture"): ``tools -> benchmarks -> realtime ->
engines -> train -> common``; a package may import itself and any package below it, never one above
(``tools``: the maintainers' tools, kept out of the installed package). Inside
the packages no two modules import each other, directly or through others, not even inside a
function or under ``TYPE_CHECKING``: every ``import`` statement anywhere in a module counts. A
composite (the cascade) registers itself from above its parts instead.

The check reads the source (``ast``), so it needs no import and sees the imports a test run would
never execute. ``from pkg import name`` counts as an import of ``pkg.name`` when that is a module
of the project, else of ``pkg``; the parent packages that Python runs implicitly are not counted
(a package's ``__init__`` re-exporting its modules is not a cycle).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Top-level packages, bottom first: each may import itself and those before it.
LAYERS: tuple[str, ...] = ("common", "train", "engines", "realtime", "benchmarks", "tools")

#: Import cycles known to exist and still to be removed (each entry: the modules of one strongly
#: connected component).
#: An entry that no longer matches a cycle fails the test too: delete it once the cycle is gone.
KNOWN_CYCLES: tuple[frozenset[str], ...] = ()


def project_modules() -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of the layered packages."""
    out: dict[str, Path] = {}
    for package in LAYERS:
        root = REPO / package
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _absolute(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a relative import ``from .{level} target``."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """``(imported project module, line)`` for every import statement anywhere in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[tuple[str, int]] = []

    def nearest(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = nearest(alias.name)
                if target:
                    found.append((target, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.level, node.module) if node.level else node.module
            if not base:
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                target = full if full in modules else nearest(base)
                if target:
                    found.append((target, node.lineno))
    return found


def import_graph() -> tuple[dict[str, Path], dict[str, dict[str, int]]]:
    modules = project_modules()
    graph: dict[str, dict[str, int]] = defaultdict(dict)
    for module, path in modules.items():
        for target, line in imports_of(module, path, modules):
            if target != module:
                graph[module].setdefault(target, line)
    return modules, graph


def strongly_connected(nodes: list[str], graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, {}))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                out.append(sorted(component))
    return out


def test_the_graph_sees_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    """The reader itself: imports inside functions and under TYPE_CHECKING are edges too."""
    modules = {"pkg": Path("pkg/__init__.py"), "pkg.a": Path("pkg/a.py"), "pkg.b": Path("pkg/b.py")}
    probe = tmp_path / "a.py"
    probe.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.b import X\n"
                     "def f():\n    from pkg import b\n    import pkg.a\n    from . import b as c\n")
    assert sorted(m for m, _ in imports_of("pkg.a", probe, modules)) == ["pkg.a", "pkg.b", "pkg.b", "pkg.b"]
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}
    assert sorted(strongly_connected(["a", "b", "c", "d"], graph)) == [["a", "b", "c"], ["d"]]


def test_imports_flow_down_the_layers() -> None:
    modules, graph = import_graph()
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for module, targets in sorted(graph.items()):
        for target, line in sorted(targets.items()):
            src, dst = module.split(".")[0], target.split(".")[0]
            if rank[dst] > rank[src]:
                upward.append(f"{modules[module].relative_to(REPO)}:{line}: {module} imports {target} "
                              f"({src} may use only {', '.join(LAYERS[: rank[src] + 1])})")
    assert not upward, "imports that go up the layers:\n" + "\n".join(upward)


def test_no_import_cycles() -> None:
    modules, graph = import_graph()
    cycles = [c for c in strongly_connected(sorted(modules), graph) if len(c) > 1]
    known = set(KNOWN_CYCLES)
    new = [c for c in cycles if frozenset(c) not in known]

    def show(cycle: list[str]) -> str:
        edges = [f"  {m} -> {t} ({modules[m].relative_to(REPO)}:{graph[m][t]})"
                 for m in cycle for t in sorted(graph.get(m, {})) if t in cycle]
        return " <-> ".join(cycle) + "\n" + "\n".join(edges)

    assert not new, "import cycles (a composite registers itself from above its parts instead):\n" + "\n".join(
        show(c) for c in new)
    gone = [sorted(k) for k in known if list(sorted(k)) not in cycles]
    assert not gone, f"KNOWN_CYCLES lists cycles that are gone: {gone}; delete them from the list"


@pytest.mark.parametrize("package", LAYERS)
def test_every_layer_is_a_package_or_absent(package: str) -> None:
    root = REPO / package
    assert not root.exists() or (root / "__init__.py").is_file()
