"""vlmkit's layout holds: imports point down the layers, no circle of imports anywhere, and the public
names are declared (``__all__``) and importable from where the README imports them.

The layers and the other contracts are written in pyproject.toml (``[tool.importlinter]``) and checked
here by import-linter, so that the README's test command enforces them.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import grimp
import pytest

import vlmkit

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PUBLIC_PACKAGES = [
    "vlmkit",
    "vlmkit.client",
    "vlmkit.client.backends",
    "vlmkit.engine",
    "vlmkit.images",
    "vlmkit.providers",
    "vlmkit.server",
    "vlmkit.batch",
]


def test_the_layer_contracts_hold() -> None:
    """``lint-imports`` over this checkout's source (PYTHONPATH first, so an installed vlmkit cannot answer)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, "import-linter found imports that break vlmkit's layers:\n" + result.stdout
    assert "0 broken" in result.stdout, result.stdout


def import_graph() -> grimp.ImportGraph:
    assert Path(vlmkit.__file__).resolve().is_relative_to(SRC.resolve()), (
        f"the tests import vlmkit from {vlmkit.__file__}, not from this checkout: put {SRC} first on PYTHONPATH"
    )
    return grimp.build_graph("vlmkit", cache_dir=None)


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, without recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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


def test_circles_are_found() -> None:
    """The search itself: a circle of three is found, and a chain is not one."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_module_imports_another_that_imports_it_back() -> None:
    """No circle among vlmkit's modules, counting every import: at call time and for type checking too.

    import-linter's contracts see cycles between packages; this sees them between single modules,
    including one through the package root (a module that imports ``vlmkit`` runs back up the layers).
    """
    graph = import_graph()
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    found = circles(edges)
    described = []
    for component in found:
        first, second = component[0], sorted(edges[component[0]] & set(component))[0]
        back = graph.find_shortest_chain(importer=second, imported=first)
        described.append(f"{first} -> {' -> '.join(back or (second,))}")
    assert not found, "circles of imports (break each by moving the shared part down):\n" + "\n".join(described)


def test_nothing_imports_the_package_root() -> None:
    """``vlmkit/__init__`` imports every layer, so a module that imports it imports everything above itself."""
    importers = sorted(import_graph().find_modules_that_directly_import("vlmkit"))
    assert importers == [], f"{importers} import the package root; import the module that holds the name instead"


@pytest.mark.parametrize("name", PUBLIC_PACKAGES)
def test_each_public_package_declares_what_it_exports(name: str) -> None:
    package = importlib.import_module(name)
    declared = getattr(package, "__all__", None)
    assert isinstance(declared, list), f"{name} has no __all__ list: declare the names it exports"
    missing = [n for n in declared if not hasattr(package, n)]
    assert not missing, f"{name}.__all__ names {missing}, which {name} does not define"
    assert len(set(declared)) == len(declared), f"{name}.__all__ lists a name twice"
    undeclared = sorted(
        n
        for n, value in vars(package).items()
        if not n.startswith("_") and not isinstance(value, types.ModuleType) and n not in declared
    )
    assert not undeclared, f"{name} exports {undeclared} without listing them in __all__: list them, or drop them"


def readme_names() -> list[tuple[str, str]]:
    """``(module, name)`` for every import in the README's Python examples and every ``vk.NAME`` or
    ``vlmkit.path.NAME`` it mentions."""
    readme = (ROOT / "README.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.+?)```", readme, flags=re.S))
    found: list[tuple[str, str]] = []
    pattern = r"^from (vlmkit[\w.]*) import (?:\(([^)]*)\)|([\w ,]+)$)"
    for module, wrapped, inline in re.findall(pattern, code, flags=re.M):
        found += [(module, n.strip()) for n in (wrapped or inline).split(",") if n.strip()]
    found += [("vlmkit", n) for n in re.findall(r"\bvk\.(\w+)", readme)]
    for path in re.findall(r"`vlmkit((?:\.\w+)+)", readme):
        module, _, name = ("vlmkit" + path).rpartition(".")
        found.append((module, name))
    return sorted(set(found))


def test_the_readme_finds_its_names() -> None:
    names = readme_names()
    assert ("vlmkit.images", "ANTHROPIC") in names and ("vlmkit.server", "create_app") in names, names
    unresolved = [f"{m}.{n}" for m, n in names if not hasattr(importlib.import_module(m), n)]
    assert not unresolved, f"the README uses {unresolved}, which no longer import from there"
