"""The architecture's rules, read from the source (every import, in-function ones included):

* no import cycle between modules, nor between packages (the registry's lazy import of ``zoo.models`` is the
  one allowed exception: timm's pattern, the models register themselves with the registry they import);
* the dependency direction of DESIGN.md: ``scoring`` and ``kernels`` import nothing of the project but
  ``kernels`` itself; ``data_pipelines`` only ``kernels`` and ``scoring``; ``zoo`` no ``eval``; ``eval`` no
  entry point;
* ``zoo.train`` (the command line) is imported by nothing.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("scoring", "kernels", "data_pipelines", "zoo", "eval", "benchmarks")
ALLOWED_MODULE_EDGES = {("zoo.registry", "zoo.models")}  # the registry's lazy load of the built-in models
ENTRY_POINTS = ("zoo.train", "zoo.cv", "zoo.hparam", "zoo.outcome", "zoo.serve", "eval.paper_table",
                "eval.outcome_report")
# Entry points sit on top (DESIGN.md) and may import any package: zoo.serve hands eval.interpret's Grad-CAM/SHAP
# to zoo.service, which (like all of zoo) does not import eval.
TOP_LEVEL = ("zoo.serve",)


def _modules() -> dict[str, str]:
    out = {}
    for pkg in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, pkg)):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].replace(os.sep, ".")
                    out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, f)
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module ``name`` refers to (``a.b.c`` may be a module or a name inside ``a.b``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str) -> set[str]:
    tree = ast.parse(open(MODULES[module], encoding="utf-8").read())
    is_pkg = MODULES[module].endswith("__init__.py")
    base = module if is_pkg else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base
                for _ in range(node.level - 1):
                    parent = parent.rpartition(".")[0]
                prefix = f"{parent}.{node.module}" if node.module else parent
            else:
                prefix = node.module
            names = [f"{prefix}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            target = _resolve(n)
            if target is not None and target != module:
                out.add(target)
    return out


GRAPH = {m: _imports(m) for m in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_graph_sees_in_function_imports():
    # zoo.registry imports zoo.models inside a function: the walk must see it (else the rules below are blind).
    assert "zoo.models" in GRAPH["zoo.registry"]
    assert len(MODULES) > 60


def test_no_module_import_cycle():
    graph = {m: {t for t in ts if (m, t) not in ALLOWED_MODULE_EDGES} for m, ts in GRAPH.items()}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def _package(module: str) -> str:
    return module.split(".")[0]


def test_no_package_import_cycle():
    graph: dict[str, set[str]] = {}
    for m, ts in GRAPH.items():
        if m not in TOP_LEVEL:  # imported by nothing (test below), so never on a cycle
            graph.setdefault(_package(m), set()).update(_package(t) for t in ts if _package(t) != _package(m))
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


@pytest.mark.parametrize("package,allowed", [
    ("scoring", {"scoring"}),
    ("kernels", {"kernels"}),
    ("data_pipelines", {"data_pipelines", "kernels", "scoring"}),
    ("zoo", {"zoo", "kernels", "data_pipelines", "scoring"}),
    ("eval", {"eval", "kernels", "data_pipelines", "scoring", "zoo"}),
])
def test_dependency_direction(package, allowed):
    bad = sorted((m, t) for m, ts in GRAPH.items() if _package(m) == package and m not in TOP_LEVEL for t in ts
                 if _package(t) not in allowed)
    assert not bad, bad


def test_entry_points_are_imported_by_nothing():
    importers = sorted((m, t) for m, ts in GRAPH.items() for t in ts if t in ENTRY_POINTS)
    assert not importers, importers
