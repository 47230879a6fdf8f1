"""The package's import graph, read from the source (ast), for the architecture tests.

Every import counts, also those inside functions (the lazy ones run too, and are how a layer would
reach upward unseen). ``from a.b import c`` is an edge to ``a.b.c`` when that is a module, else to
``a.b``. Edges to packages' ``__init__`` are kept: importing a package runs it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGE = "migrainemamba"

# The layers, lowest first: a module may import its own layer and those below, never above.
# docs/architecture.md, "Layers", explains each.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("config", "runtime", "tracking", "metrics", "split", "pipeline", "distributed"),  # core
    ("data",),
    ("features",),
    ("models",),
    ("evaluation", "insights", "clinical"),
    ("release", "experiments"),
    ("service",),
    ("stages",),
)


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of the package (Alembic's migration scripts are not imported by the package)."""
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        if "alembic" in path.relative_to(SRC).parts:
            continue
        found[module_name(path)] = path
    return found


def _resolve(name: str) -> str | None:
    """The package module ``name`` stands for (or its nearest enclosing one), None if outside."""
    mods = modules()
    while name:
        if name in mods:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(path: Path, module: str | None = None) -> set[str]:
    """Package modules imported by the file at ``path`` (a module of the package or a script)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        targets: Iterable[str] = ()
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = (module or "").split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                resolved = _resolve(target)
                if resolved is not None and resolved != module:
                    out.add(resolved)
    return out


@cache
def graph() -> dict[str, frozenset[str]]:
    return {name: frozenset(imports_of(path, name)) for name, path in modules().items()}


def with_parents(name: str) -> set[str]:
    """A module and the packages above it (importing ``a.b.c`` runs ``a`` and ``a.b`` first)."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(modules())


def closure(start: Iterable[str]) -> set[str]:
    """Every package module reachable from ``start`` (with the packages that contain them)."""
    seen: set[str] = set()
    todo = [m for s in start for m in with_parents(s)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for target in graph()[name]:
            todo.extend(with_parents(target) - seen)
    return seen


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    if top == "":
        return 0  # the package's own __init__
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise KeyError(f"{module}: its top-level name {top!r} is in no layer of tests/architecture/imports.py")


def cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph()[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph():
        if v not in index:
            visit(v)
    return found
