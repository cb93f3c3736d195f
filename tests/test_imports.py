"""The package's import graph: no cycles among sizewise modules, no private names taken from another module.

The graph is read from the source (every ``import`` statement, at module level or inside a function),
so an import hidden inside a function still counts: a cycle cannot be papered over by deferring it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sizewise

PACKAGE_ROOT = Path(sizewise.__file__).parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE_ROOT.rglob("*.py"))}


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(module: str, level: int, current: str) -> str:
    """The absolute name of ``from <level dots><module> import ...`` written in module ``current``."""
    if level == 0:
        return module
    base = current.split(".")
    if not _is_package(current):
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _imports(name: str, tree: ast.AST) -> list[tuple[str, list[str], int]]:
    """Every (module imported, names taken from it, line) in ``tree`` that lies inside sizewise."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node.module or "", node.level, name)
            found.append((target, [alias.name for alias in node.names], node.lineno))
    return [(m, names, line) for m, names, line in found if m == "sizewise" or m.startswith("sizewise.")]


def _edges(name: str, target: str, names: list[str]) -> set[str]:
    """The sizewise modules that importing ``target`` (taking ``names``) from module ``name`` runs.

    Importing ``a.b.c`` runs the packages ``a`` and ``a.b`` first, unless the importer lies inside
    them (then they are already being imported); ``from a.b import c`` runs ``a.b.c`` when it is a module.
    """
    out = set()
    parts = target.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if prefix in MODULES and not (name == prefix or name.startswith(prefix + ".")):
            out.add(prefix)
    for n in names:
        sub = f"{target}.{n}"
        if sub in MODULES and sub != name:
            out.add(sub)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the sizewise modules it imports (directly, anywhere in its source)."""
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[name] = set()
        for target, names, _ in _imports(name, tree):
            graph[name] |= _edges(name, target, names)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
            if len(component) > 1 or v in graph.get(v, ()):
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def private_uses(name: str, tree: ast.AST) -> list[str]:
    """``from sizewise.x import _name``, and ``x._name`` on a sizewise module ``x`` imported by module ``name``."""
    problems = []
    aliases: dict[str, str] = {}  # local name -> the sizewise module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(node.module or "", node.level, name)
            if not (target == "sizewise" or target.startswith("sizewise.")) or target == name:
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    problems.append(f"line {node.lineno}: imports {alias.name} from {target}")
                if f"{target}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{target}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sizewise.") and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and aliases.get(node.value.id, name) != name
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            problems.append(f"line {node.lineno}: uses {node.attr} of {aliases[node.value.id]}")
    return problems


def private_imports() -> list[str]:
    """Every private name a sizewise module takes from another, as ``path line N: ...``."""
    problems = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = path.relative_to(PACKAGE_ROOT.parent)
        problems += [f"{rel} {p}" for p in private_uses(name, tree)]
    return problems


def test_the_package_has_no_import_cycle() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles among sizewise modules: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_module_takes_a_private_name_from_another() -> None:
    problems = private_imports()
    assert not problems, "private names used across modules:\n" + "\n".join(problems)


# -- the checks themselves, on hand-made graphs and sources ---------------------------------------


def test_find_cycles_sees_a_cycle_through_three_modules_and_ignores_a_chain() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"a"}}) == [["a"]]


def test_a_function_level_import_counts_as_an_edge() -> None:
    tree = ast.parse("def f():\n    from sizewise.study import run_study\n")
    assert _imports("sizewise.config", tree) == [("sizewise.study", ["run_study"], 2)]


@pytest.mark.parametrize(
    ("current", "module", "level", "expected"),
    [
        ("sizewise.compress.learner", "storage", 1, "sizewise.compress.storage"),
        ("sizewise.compress", "learner", 1, "sizewise.compress.learner"),
        ("sizewise.compress.learner", "learners.base", 2, "sizewise.learners.base"),
    ],
)
def test_relative_imports_resolve(current: str, module: str, level: int, expected: str) -> None:
    assert _resolve(module, level, current) == expected


def test_importing_a_submodule_runs_its_packages_but_not_the_importers_own() -> None:
    assert _edges("sizewise.study", "sizewise.compress.storage", []) == {
        "sizewise.compress",
        "sizewise.compress.storage",
    }
    assert _edges("sizewise.compress.learner", "sizewise.compress.storage", []) == {"sizewise.compress.storage"}
    assert _edges("sizewise.study", "sizewise.compress", ["compress", "storage"]) == {
        "sizewise.compress",
        "sizewise.compress.storage",
    }


def test_private_names_are_found_in_from_imports_and_module_attributes() -> None:
    source = (
        "from sizewise.learners.base import _Entry, LEARNERS\n"
        "from sizewise.learners import base\n"
        "x = base._Entry\n"
        "y = base.LEARNERS\n"
    )
    assert private_uses("sizewise.study", ast.parse(source)) == [
        "line 1: imports _Entry from sizewise.learners.base",
        "line 3: uses _Entry of sizewise.learners.base",
    ]
    # a module's own private names are its own business
    assert private_uses("sizewise.learners.base", ast.parse("from sizewise.learners.base import _Entry\n")) == []
