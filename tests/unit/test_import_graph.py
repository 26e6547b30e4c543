"""No import cycle among labelhaul's modules (issue 15): the layers import downwards only.

The graph is read from the source with `ast`, over every package pyproject.toml installs
(`labelhaul`, `labelhaul.flows` from flows/, ...). An edge is an import that runs when the
module is imported: module level, `if TYPE_CHECKING:` blocks included (a cycle there is
still a knot in the design). A second check adds the imports deferred into functions.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _modules() -> dict[str, Path]:
    """Return {dotted module name: file} for every module of the installed packages."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_dir: dict[str, str] = setuptools.get("package-dir", {})
    modules: dict[str, Path] = {}
    for package in setuptools["packages"]:
        head = package
        while head not in package_dir and "." in head:
            head = head.rpartition(".")[0]
        rest = package[len(head) :].lstrip(".").split(".") if package != head else []
        directory = ROOT / package_dir.get(head, head.replace(".", "/")) / "/".join(rest)
        for path in sorted(directory.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            modules[name] = path
        # A C extension (labelhaul/_maskcore.c) is known by its stub; it imports no module.
        for path in sorted(directory.glob("*.pyi")):
            modules.setdefault(f"{package}.{path.stem}", path)
    return modules


def _imports(tree: ast.Module, *, deferred: bool) -> list[ast.Import | ast.ImportFrom]:
    """Return the import statements run at import time (with `deferred`: all of them)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append(child)
            elif deferred or not isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            ):
                visit(child)

    visit(tree)
    return found


def _graph(modules: dict[str, Path], *, deferred: bool) -> dict[str, set[str]]:
    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.stem == "__init__" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text()), deferred=deferred):
            if isinstance(node, ast.Import):
                targets.update(owner(alias.name) or "" for alias in node.names)
                continue
            base = node.module or ""
            if node.level:
                anchor = package
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                # `from pkg import submodule` needs the submodule, not the package's names.
                full = f"{base}.{alias.name}"
                targets.add(full if full in modules else owner(base) or "")
        graph[name] = {t for t in targets if t and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """Return one import cycle as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state:
                found = walk(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = walk(node)
            if found:
                return found
    return None


def test_the_graph_sees_every_package_and_real_edges() -> None:
    modules = _modules()
    for name in ("labelhaul.rows", "labelhaul.flows.sync_project", "labelhaul.config.settings"):
        assert name in modules
    graph = _graph(modules, deferred=False)
    assert "labelhaul.tables" in graph["labelhaul.rows"]
    assert "labelhaul.emulator.imaging" in graph["labelhaul.emulator.sources"]


@pytest.mark.parametrize("deferred", [False, True], ids=["import time", "with deferred"])
def test_no_import_cycle(deferred: bool) -> None:
    cycle = _cycle(_graph(_modules(), deferred=deferred))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_check_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
