"""The requirement files say what runs: requirements.txt holds what the product needs, nothing else.

Read from the files and the installed metadata (`importlib.metadata`), with no
network. A runtime pin is either *direct*, a distribution whose module the
product (jobs/, project/) imports or names by its dotted path (settings such as
INSTALLED_APPS, MIDDLEWARE and the layer's BACKEND are strings), or marked
`# via X`: needed by X, another runtime pin, which requires it (its metadata,
directly or through other pins) or imports it in its own code (an optional
backend X loads by name, as Django does psycopg for a postgres:// DATABASE_URL).
What only benchmarks, tests and development scripts use goes to
requirements-dev.txt.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("jobs", "project")
"""The product's code: what requirements.txt is for."""
DEVELOPMENT = ("bench", "tests", "scripts")
"""Benchmarks, tests and development scripts: requirements-dev.txt (which includes requirements.txt)."""
OURS = {*PRODUCT, *DEVELOPMENT, "manage"}
_VIA = re.compile(r"#\s*via\s+([A-Za-z0-9._-]+)")
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class Pin:
    """One `name[extras]==version` line of a requirement file."""

    requirement: Requirement
    via: NormalizedName | None
    """The pin that needs this one (`# via X`), or None for a direct pin."""
    line: int

    @property
    def name(self) -> NormalizedName:
        return canonicalize_name(self.requirement.name)


def read_pins(path: Path) -> list[Pin]:
    """The pins of one requirement file (`-r` includes are not followed)."""
    pins = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        spec, _, comment = raw.partition("#")
        spec = spec.strip()
        if not spec or spec.startswith("-"):
            continue
        via = _VIA.search("#" + comment) if comment else None
        pins.append(Pin(Requirement(spec), canonicalize_name(via.group(1)) if via else None, number))
    return pins


@cache
def runtime_pins() -> dict[NormalizedName, Pin]:
    return {pin.name: pin for pin in read_pins(ROOT / "requirements.txt")}


@cache
def dev_pins() -> dict[NormalizedName, Pin]:
    return {pin.name: pin for pin in read_pins(ROOT / "requirements-dev.txt")}


@cache
def modules_of() -> dict[NormalizedName, set[str]]:
    """Distribution -> the top-level modules it installs."""
    found: dict[NormalizedName, set[str]] = {}
    for module, distributions in metadata.packages_distributions().items():
        for distribution in distributions:
            found.setdefault(canonicalize_name(distribution), set()).add(module)
    return found


def distribution_of(module: str) -> set[NormalizedName]:
    return {canonicalize_name(name) for name in metadata.packages_distributions().get(module, [])}


def python_files(*roots: str) -> Iterator[Path]:
    for root in roots:
        yield from (path for path in (ROOT / root).rglob("*.py") if ".venv" not in path.parts)


def named_modules(path: Path) -> set[str]:
    """Top-level modules `path` imports, or names in a string that is a dotted path ("whitenoise.middleware...",
    "daphne" in INSTALLED_APPS, find_spec("psycopg_pool")); only names that are installed modules count."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module.partition(".")[0])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _DOTTED.fullmatch(node.value):
            found.add(node.value.partition(".")[0])
    return found


def third_party(modules: set[str]) -> set[str]:
    return {m for m in modules if m not in sys.stdlib_module_names and m not in OURS and distribution_of(m)}


@cache
def product_modules() -> set[str]:
    return third_party(set().union(*(named_modules(path) for path in python_files(*PRODUCT))))


def requires(name: str, extras: frozenset[str] = frozenset()) -> set[NormalizedName]:
    """The distributions `name` (with `extras`) requires on this interpreter."""
    found = set()
    for spec in metadata.requires(name) or []:
        requirement = Requirement(spec)
        environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
        if requirement.marker is None or any(requirement.marker.evaluate(env) for env in environments):
            found.add(canonicalize_name(requirement.name))
    return found


def closure(pins: dict[NormalizedName, Pin], start: NormalizedName) -> set[NormalizedName]:
    """What `start` requires, directly or through the others (with the extras pinned for each)."""
    seen: set[NormalizedName] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        extras = frozenset(pins[name].requirement.extras) if name in pins else frozenset()
        for needed in requires(name, extras) - seen:
            seen.add(needed)
            todo.append(needed)
    return seen


def imports_module(distribution: str, modules: set[str]) -> bool:
    """Whether the code of installed `distribution` imports one of `modules`."""
    pattern = re.compile(rf"^\s*(?:import|from)\s+(?:{'|'.join(map(re.escape, modules))})\b", re.MULTILINE)
    for file in metadata.files(distribution) or []:
        if file.suffix == ".py" and pattern.search(Path(file.locate()).read_text(errors="replace")):
            return True
    return False


def test_every_direct_runtime_pin_is_imported_or_named_by_the_product() -> None:
    unused = [
        f"requirements.txt line {pin.line}: {pin.requirement} (modules {sorted(modules_of().get(pin.name, []))})"
        for pin in runtime_pins().values()
        if pin.via is None and not modules_of().get(pin.name, set()) & product_modules()
    ]
    assert not unused, (
        "runtime pins that nothing in jobs/ or project/ imports: move them to requirements-dev.txt, or mark"
        " a dependency of another pin `# via NAME`:\n" + "\n".join(unused)
    )


def test_every_via_pin_is_needed_by_the_pin_it_names() -> None:
    pins = runtime_pins()
    wrong = []
    for pin in pins.values():
        if pin.via is None:
            continue
        if pin.via not in pins:
            wrong.append(f"line {pin.line}: {pin.name} is `via {pin.via}`, which is not a runtime pin")
        elif pin.name not in closure(pins, pin.via) and not imports_module(pin.via, modules_of().get(pin.name, set())):
            wrong.append(f"line {pin.line}: {pin.via} neither requires nor imports {pin.name}")
    assert not wrong, "\n".join(wrong)


def test_everything_the_runtime_pins_require_is_pinned_there_too() -> None:
    """So an install from requirements.txt alone is the set that was audited (docs/audit.md)."""
    pins = runtime_pins()
    missing = {
        f"{needed} (required by {name})"
        for name in pins
        for needed in requires(name, frozenset(pins[name].requirement.extras))
        if needed not in pins
    }
    assert not missing, f"unpinned runtime dependencies: {sorted(missing)}"


def test_every_module_the_product_imports_comes_from_a_runtime_pin() -> None:
    pins = runtime_pins()
    unpinned = {module: sorted(distribution_of(module)) for module in product_modules()
                if not distribution_of(module) & pins.keys()}  # fmt: skip
    assert not unpinned, f"imported by jobs/ or project/ but not pinned in requirements.txt: {unpinned}"


def test_every_module_the_benchmarks_tests_and_scripts_import_is_pinned() -> None:
    pinned = runtime_pins().keys() | dev_pins().keys()
    modules = third_party(set().union(*(named_modules(path) for path in python_files(*DEVELOPMENT))))
    unpinned = {module: sorted(distribution_of(module)) for module in modules
                if not distribution_of(module) & pinned}  # fmt: skip
    assert not unpinned, f"imported by bench/, tests/ or scripts/ but pinned in neither requirement file: {unpinned}"


def test_runtime_and_dev_pins_do_not_overlap() -> None:
    assert not runtime_pins().keys() & dev_pins().keys()


def test_via_markers_are_read(tmp_path: Path) -> None:
    """The test's own parser: a marker names the pin, other comments do not."""
    path = tmp_path / "requirements.txt"
    path.write_text("# a comment\n-r other.txt\nA==1\nb_c[x]==2  # via A\nd==3  # imported directly\n")
    assert [(pin.name, pin.via, pin.line) for pin in read_pins(path)] == [("a", None, 3), ("b-c", "a", 4), ("d", None, 5)]
