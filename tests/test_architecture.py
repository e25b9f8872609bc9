"""The package's import graph: no cycles, layers import only downwards, and the trainer is imported only
from the top (docs/architecture.md).

Every ``import`` and ``from ... import`` in every module under nerfxl/ counts, including the ones inside
functions and under ``if TYPE_CHECKING`` (an import deferred into a function still ties the two
modules together; it only hides the tie from the interpreter).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nerfxl"

LAYERS = [
    ("base", ("nerfxl.errors", "nerfxl.fileio", "nerfxl.configio")),
    ("data", ("nerfxl.data",)),
    ("rendering", ("nerfxl.rendering",)),
    ("fields", ("nerfxl.fields",)),
    ("renderer", ("nerfxl.renderer",)),
    ("partition", ("nerfxl.partition",)),
    ("parallel", ("nerfxl.parallel", "nerfxl.checkpoint")),
    ("run", ("nerfxl.run",)),
]
"""The layers from the bottom up, each a list of modules or packages. A module may import its own layer
and the layers below it. Every module not listed here (train, evaluate, render, view, viewer, merge,
check, fetch, baselines, bench, presets, cli, commands, ...) is in the top layer, where only the
no-cycle rule holds."""

TOP = "commands"

TRAIN_IMPORTERS = {"nerfxl.cli", "nerfxl.commands", "nerfxl.__main__"}
"""The modules that may import nerfxl.train (the job runner and its loop): the command line alone. The
drivers that train models themselves (the independent baselines, the benchmarks) use the Trainer of
nerfxl.trainer, or nerfxl.commands.train_run; everything else uses the run layer (nerfxl.run) for
configs, run folders and checkpoints."""

COMMAND_MODULES = {"nerfxl.train", "nerfxl.evaluate", "nerfxl.render", "nerfxl.view", "nerfxl.merge", "nerfxl.check",
                   "nerfxl.presets", "nerfxl.commands", "nerfxl.cli"}
"""The modules behind the commands (nerfxl train, eval, render, view, merge, check)."""

TOP_LIBRARIES = ("nerfxl.viewer", "nerfxl.fetch")
"""Top-layer packages that the commands build on (train --viewer, view, render --dynamic-fetch): they
import none of the command modules."""


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} → {self.target} ({module_path(self.source)}:{self.line})"


def module_files() -> dict[str, Path]:
    """Dotted module name → file, for every module of the package."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def module_path(name: str) -> str:
    return str(MODULES[name].relative_to(PACKAGE.parent))


def _known(name: str) -> str | None:
    """The nearest enclosing module of the package for a dotted name (``nerfxl.a.b.func`` → ``nerfxl.a.b``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str) -> list[Edge]:
    """Every import of a package module in module ``name``, wherever in the file it is."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # ``from pkg import sub`` imports the module pkg.sub when there is one.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            if target == "nerfxl" or target.startswith("nerfxl."):
                found = _known(target)
                if found is not None and found != name:
                    edges.append(Edge(name, found, node.lineno))
    return sorted(set(edges), key=lambda e: (e.line, e.target))


GRAPH = {name: imports_of(name) for name in MODULES}


def layer_of(name: str) -> int:
    for i, (_, members) in enumerate(LAYERS):
        if any(name == m or name.startswith(m + ".") for m in members):
            return i
    return len(LAYERS)


def layer_name(index: int) -> str:
    return LAYERS[index][0] if index < len(LAYERS) else TOP


def find_cycle(graph: dict[str, list[Edge]]) -> list[Edge] | None:
    """One import cycle as its edges, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if state.get(root):
            continue
        path: list[Edge] = []
        stack = [(root, iter(graph[root]))]
        state[root] = 1
        while stack:
            node, edges = stack[-1]
            edge = next(edges, None)
            if edge is None:
                state[node] = 2
                stack.pop()
                if path:
                    path.pop()
                continue
            if state.get(edge.target) == 1:  # back to a module on the current path: a cycle
                start = [n for n, _ in stack].index(edge.target)
                return path[start:] + [edge]
            if not state.get(edge.target):
                state[edge.target] = 1
                path.append(edge)
                stack.append((edge.target, iter(graph[edge.target])))
    return None


def test_the_graph_sees_every_module_and_the_imports_inside_functions():
    assert {"nerfxl.train", "nerfxl.run.config", "nerfxl.cli", "nerfxl.rendering.volume"} <= set(MODULES)
    # commands.py imports the trainer inside functions only: those imports must be in the graph.
    assert "nerfxl.train" in {e.target for e in GRAPH["nerfxl.commands"]}


def test_find_cycle_reports_a_cycle_and_accepts_a_tree():
    def graph(pairs):
        g = {n: [] for p in pairs for n in p}
        for a, b in pairs:
            g[a].append(Edge(a, b, 1))
        return g

    assert find_cycle(graph([("a", "b"), ("b", "c"), ("a", "c")])) is None
    cycle = find_cycle(graph([("a", "b"), ("b", "c"), ("c", "d"), ("d", "b")]))
    assert [(e.source, e.target) for e in cycle] == [("b", "c"), ("c", "d"), ("d", "b")]
    assert [(e.source, e.target) for e in find_cycle(graph([("a", "a2"), ("a2", "a")]))] == [("a", "a2"), ("a2", "a")]


def test_no_import_cycles():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle:\n  " + "\n  ".join(map(str, cycle))


@pytest.mark.parametrize("layer", [name for name, _ in LAYERS])
def test_layers_import_only_downwards(layer):
    index = next(i for i, (name, _) in enumerate(LAYERS) if name == layer)
    upward = [f"{e} imports the {layer_name(layer_of(e.target))} layer"
              for name in sorted(MODULES) if layer_of(name) == index
              for e in GRAPH[name] if layer_of(e.target) > index]
    assert not upward, (f"the {layer} layer may import only itself and the layers below it "
                        f"({', '.join(n for n, _ in LAYERS[:index]) or 'none'}):\n  " + "\n  ".join(upward))


def test_only_the_top_imports_the_trainer():
    importers = sorted(str(e) for name in MODULES for e in GRAPH[name]
                       if e.target == "nerfxl.train" and name not in TRAIN_IMPORTERS)
    assert not importers, ("nerfxl.train is imported only by the command line; import the Trainer from nerfxl.trainer "
                           "and configs, run folders and checkpoints from nerfxl.run instead:\n  " + "\n  ".join(importers))


def test_no_module_uses_the_old_trained_module():
    found = sorted(str(e) for name in MODULES for e in GRAPH[name] if e.target == "nerfxl.trained")
    assert not found, "nerfxl.trained is kept for user code; import nerfxl.run.trained:\n  " + "\n  ".join(found)


def test_the_viewer_and_fetching_import_no_command_module():
    found = sorted(str(e) for name in MODULES if name.startswith(TOP_LIBRARIES)
                   for e in GRAPH[name] if e.target in COMMAND_MODULES)
    assert not found, ("the viewer and fetching are built on by the commands and import none of them (image rendering: "
                       "nerfxl.parallel.images, camera paths: nerfxl.data.camera_paths, runs: nerfxl.run):\n  "
                       + "\n  ".join(found))
