"""No import cycles inside ``wa_agent``: each module can be read, imported and changed
without dragging in one that imports it back.

The graph is built from the source with :mod:`ast`: every ``import wa_agent...`` and
``from . import ...`` counts, at module level or inside a function (a function-level import
is still a dependency, only a later one), except inside ``if TYPE_CHECKING:`` blocks (never
run). ``from pkg import name`` points at the submodule ``pkg.name`` when there is one, at
the package otherwise. ``importlib.import_module`` with a computed name (the lazy exports of
``wa_agent/__init__.py``) cannot be read statically and is not counted.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "wa_agent"

#: Known cycles still to be broken, as (importer, imported) edges left out of the check.
#: Empty: ``phone`` -> ``testing.simulator`` exists only under ``if TYPE_CHECKING:``, and no
#: cycle goes through ``interface``. Add an edge here only with an issue to remove it.
ALLOWED_EDGES: frozenset[tuple[str, str]] = frozenset()


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, modules: set[str], root: Path = ROOT) -> set[str]:
    """The ``wa_agent`` modules that the module at ``path`` imports when it runs."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def target(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        return ".".join([*base, *([node.module] if node.module else [])])

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = target(node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    found.discard(name)
    return {m for m in found if m in modules}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: imports_of(path, modules) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> Iterator[list[str]]:
    """One cycle (as a path that returns to its start) per strongly connected component of
    more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    for component in components:
        yield _path_within(graph, component)


def _path_within(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first)."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node] & component):
            if child == start:
                return [*paths[node], start]
            if child not in paths:
                paths[child] = [*paths[node], child]
                queue.append(child)
    raise AssertionError(f"no cycle in {component}")


def test_no_import_cycle_inside_the_package() -> None:
    """No module of wa_agent imports (directly or through others) a module that imports it
    back, apart from the explicitly allowed edges."""
    graph = import_graph()
    for importer, imported in ALLOWED_EDGES:
        assert imported in graph[importer], (
            f"allowed edge {importer} -> {imported} is gone: remove it from ALLOWED_EDGES"
        )
        graph[importer] = graph[importer] - {imported}
    found = [" -> ".join(cycle) for cycle in cycles(graph)]
    assert found == [], "import cycles:\n" + "\n".join(found)


def test_the_checker_sees_cycles() -> None:
    """The checker reports a cycle of three modules (and only the modules in it) and
    nothing for a graph without one (made-up graphs)."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert list(cycles(graph)) == [["a", "b", "c", "a"]]
    assert list(cycles({"a": {"b"}, "b": set()})) == []


def test_the_reader_counts_function_level_and_skips_type_checking(tmp_path: Path) -> None:
    """``imports_of`` counts relative imports inside functions, resolves ``from . import x``
    to the submodule, and skips ``if TYPE_CHECKING:`` blocks but not their ``else``."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import text\n"
        "if TYPE_CHECKING:\n"
        "    from .phone import PhoneWidget\n"
        "else:\n"
        "    from .secret import Secret\n"
        "def later():\n"
        "    from .testing.simulator import Simulator\n"
        "    import wa_agent.parser\n"
    )
    modules = {
        "wa_agent.text",
        "wa_agent.phone",
        "wa_agent.secret",
        "wa_agent.testing.simulator",
        "wa_agent.parser",
    }
    path = tmp_path / "wa_agent" / "made_up.py"
    path.parent.mkdir()
    path.write_text(source)
    assert imports_of(path, modules, root=tmp_path) == {
        "wa_agent.text",
        "wa_agent.secret",
        "wa_agent.testing.simulator",
        "wa_agent.parser",
    }
