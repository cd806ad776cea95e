"""The project's import graph (cars_ray/, serve/, pipelines/) has no circles, and inference has no upward imports.

Read from the source with ``ast`` (no module is imported): module-level and function-level imports both count,
since a function-level import closes a circle as soon as it runs; imports under ``if TYPE_CHECKING:`` do not
(they never run).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

from helpers.data import REPO

ROOTS = ("cars_ray", "serve", "pipelines")


def project_modules() -> dict[str, Path]:
    modules = {}
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _type_checking_only(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return isinstance(test, (ast.Name, ast.Attribute)) and ast.unparse(test).endswith("TYPE_CHECKING")


def imported(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``module`` imports anywhere in its file, except under ``if TYPE_CHECKING:``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            names = []
        for name in names:
            while name and name not in known:  # import a.b.c of a function or class: its module
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
    return found


@functools.cache
def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {module: imported(module, path, set(modules)) for module, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle (a -> b -> ... -> a) per strongly connected group of modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_circle_through(graph, group) for group in groups]


def _circle_through(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """A shortest path from the group's first module back to it, inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    return paths[node] + [start]
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    following.append(nxt)
        frontier = following
    return group


def test_the_import_graph_has_no_circles():
    graph = import_graph()
    assert {"cars_ray.inference.model", "cars_ray.export", "serve.app", "pipelines.predict"} <= set(graph)
    found = circles(graph)
    assert not found, "import circles: " + "; ".join(" -> ".join(circle) for circle in found)


def test_the_circle_finder_names_a_circle():
    """The finder itself, on the circles this project had (issue 23), so the test above cannot pass vacuously."""
    graph = {"cars_ray.evaluate.predictor": {"cars_ray.export"}, "cars_ray.export": {"cars_ray.evaluate.batch_predict"},
             "cars_ray.evaluate.batch_predict": {"cars_ray.evaluate.predictor"},
             "cars_ray.preprocessing": {"cars_ray.views"}, "cars_ray.views": {"cars_ray.preprocessing"}, "x": set()}
    assert circles(graph) == [
        ["cars_ray.evaluate.batch_predict", "cars_ray.evaluate.predictor", "cars_ray.export",
         "cars_ray.evaluate.batch_predict"],
        ["cars_ray.preprocessing", "cars_ray.views", "cars_ray.preprocessing"]]


def test_function_level_and_relative_imports_count_and_type_checking_ones_do_not(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cars_ray.views import EvalView\n"
                      "def f():\n    from cars_ray.checkpoint import read_meta\n    from . import errors\n"
                      "import cars_ray.data.images\n")
    known = {"cars_ray.views", "cars_ray.checkpoint", "cars_ray.errors", "cars_ray.data.images", "cars_ray.m"}
    assert imported("cars_ray.m", source, known) == {"cars_ray.checkpoint", "cars_ray.errors", "cars_ray.data.images"}


def test_inference_imports_nothing_above_it():
    """evaluate, export, serve, pipelines, train and tune depend on cars_ray.inference, never the reverse."""
    above = ("cars_ray.evaluate", "cars_ray.export", "cars_ray.train", "cars_ray.tune", "cars_ray.cli", "serve",
             "pipelines")
    graph = import_graph()
    upward = {(module, target) for module, targets in graph.items() if module.startswith("cars_ray.inference")
              for target in targets if target.startswith(above)}
    assert not upward, f"cars_ray.inference imports modules above it: {sorted(upward)}"
