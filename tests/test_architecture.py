"""The layout's rules, read from the source: no import cycles, no Django under the engine.

The graph is built with `ast` from every module of `jobs/` (imports inside
functions count; those under `if TYPE_CHECKING:` do not, as they never run), so
a cycle or a forbidden import fails here before it fails at run time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JOBS = ROOT / "jobs"

# Packages with no Django: importable and testable without settings.
DJANGO_FREE = ("jobs.engine",)
FORBIDDEN_IN_DJANGO_FREE = ("django", "channels", "daphne", "asgiref")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in JOBS.rglob("*.py") if "migrations" not in p.parts}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _imports(node)


def imported_names(name: str, path: Path) -> set[str]:
    """Every absolute module name `name` imports (`from a import b` yields a and a.b)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        found.add(base)
        found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of `jobs` it imports (a package's __init__ counts as the package)."""
    modules = all_modules()
    return {name: {m for m in imported_names(name, path) if m in modules and m != name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path [a, b, ..., a], or None (depth-first search, colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_import_graph_of_jobs_has_no_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 30, "the walk found too few modules to be looking at jobs/"
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


def test_the_packages_import_each_other_in_layers() -> None:
    """jobs.engine, jobs.queue, ... form a DAG too: each package only builds on those below it."""
    graph: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        source = ".".join(module.split(".")[:2])
        graph.setdefault(source, set()).update(".".join(t.split(".")[:2]) for t in targets)
    for package, targets in graph.items():
        targets.discard(package)
    assert find_cycle(graph) is None, f"package cycle: {' -> '.join(find_cycle(graph) or [])}"


@pytest.mark.parametrize("package", DJANGO_FREE)
def test_no_django_import_under_the_engine(package: str) -> None:
    offenders = sorted(
        f"{name} imports {imported}"
        for name, path in all_modules().items()
        if name == package or name.startswith(package + ".")
        for imported in imported_names(name, path)
        if imported.split(".")[0] in FORBIDDEN_IN_DJANGO_FREE
        or (imported.startswith("jobs.") and not imported.startswith(package))
    )
    assert offenders == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The checks above can fail: a planted cycle and a planted Django import are found."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_imported_names_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    source = tmp_path / "jobs" / "engine" / "mod.py"
    source.parent.mkdir(parents=True)
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n    from jobs.models import Job\n"
        "def f():\n    import django.conf\n"
    )
    names = imported_names("jobs.engine.mod", source)
    assert {"jobs.engine.sibling", "django.conf"} <= names
    assert "jobs.models" not in names
