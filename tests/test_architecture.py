"""The architecture's rules, read from the source (every import, in-function ones included):

* no import cycle between modules, nor between packages (the registry's lazy import of ``zoo.models`` is the
  one allowed exception: timm's pattern, the models register themselves with the registry they import);
* the dependency direction of DESIGN.md for the libraries: ``scoring`` and ``kernels`` import nothing of the
  project but themselves; ``data_pipelines`` only ``kernels`` and ``scoring``; ``zoo`` no ``eval``;
* entry points (a module that defines a command-line ``main``, or a ``__main__``) sit on top: they may import
  any package, and nothing imports them;
* no private name (``_x``) crosses a module: not imported from another module, not reached as an attribute of
  anything but ``self``/``cls`` (third-party privates such as Starlette's ``request._receive`` included); a
  private *module* (``pkg/_base.py``) is its package's own and may be imported by its siblings.
"""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("scoring", "kernels", "data_pipelines", "zoo", "eval", "benchmarks")
ALLOWED_MODULE_EDGES = {("zoo.registry", "zoo.models")}  # the registry's lazy load of the built-in models


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


def _defines_main(path: str) -> bool:
    if os.path.basename(path) == "__main__.py":
        return True
    tree = ast.parse(open(path, encoding="utf-8").read())
    return any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)


# A module that defines a command-line ``main`` is an entry point (DESIGN.md: on top, imported by nothing).
ENTRY_POINTS = {m for m, path in MODULES.items() if _defines_main(path)}


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
        if m not in ENTRY_POINTS:  # imported by nothing (test below), so never on a cycle
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
    bad = sorted((m, t) for m, ts in GRAPH.items() if _package(m) == package and m not in ENTRY_POINTS for t in ts
                 if _package(t) not in allowed)
    assert not bad, bad


def test_entry_points_are_imported_by_nothing():
    importers = sorted((m, t) for m, ts in GRAPH.items() for t in ts if t in ENTRY_POINTS)
    assert not importers, importers


def test_entry_points_are_found():
    # the rule above is blind if the scan finds no entry point
    assert {"zoo.train", "zoo.predict", "zoo.serve", "eval.evaluate"} <= ENTRY_POINTS


def _private_crossings(module: str) -> list[str]:
    path = MODULES[module]
    tree = ast.parse(open(path, encoding="utf-8").read())
    pkg = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    target = _resolve(f"{node.module}.{a.name}") if node.module else None
                    sibling_module = (target == f"{node.module}.{a.name}"
                                      and target.rpartition(".")[0] == pkg)
                    if not sibling_module:
                        out.append(f"{module}:{node.lineno} imports {node.module}.{a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if any(part.startswith("_") and not part.startswith("__") for part in a.name.split(".")):
                    target = _resolve(a.name)
                    if not (target == a.name and target.rpartition(".")[0] == pkg):
                        out.append(f"{module}:{node.lineno} imports {a.name}")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                out.append(f"{module}:{node.lineno} reaches {ast.unparse(node)}")
    return out


def test_no_private_name_crosses_a_module():
    bad = [line for m in sorted(MODULES) for line in _private_crossings(m)]
    assert not bad, "\n".join(bad)


# Where a file is renamed into place by hand, and why it is not data_pipelines.atomic's writer: kernels may not
# import data_pipelines (the developer's compile-on-first-use cache), a store entry is a whole folder moved into
# place, a damaged checkpoint step is moved aside (not written), the export's standalone runtime runs where nothing
# of medzoo is importable.
OWN_RENAMES = {"kernels.native", "zoo.store", "zoo.checkpoint", "zoo.export_runtime"}


def test_files_are_written_through_the_one_atomic_writer():
    bad = []
    for m, path in sorted(MODULES.items()):
        if m == "data_pipelines.atomic":
            continue
        tree = ast.parse(open(path, encoding="utf-8").read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                call = ast.unparse(node.func)
                if call == "json.dump" or (call in ("os.replace", "os.rename") and m not in OWN_RENAMES):
                    bad.append(f"{m}:{node.lineno} {call}")
    assert not bad, "\n".join(bad)
