"""The package's layering, read from the source (``ast``; nothing is imported): no import cycle
between ``dan`` modules, no arrow from a low layer up to the training side, and no method that
imports the run layer.

Every ``import`` counts, wherever it stands (module level, inside a function, under
``if TYPE_CHECKING``): a function-level import only postpones a cycle to the first call. An edge
goes to the module a statement names: ``from dan.methods import kd`` is an edge to
``dan.methods.kd``, ``from dan.methods import get_method`` one to ``dan.methods``. The implicit
import of a parent package (importing ``dan.methods.kd`` runs ``dan/methods/__init__.py``
first) is not an edge, as in import-linter/grimp: otherwise every package that imports its own
submodules would be a cycle.
"""

from __future__ import annotations

import ast
import os
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "dan")

LOW = ("dan.cost", "dan.layers", "dan.graph", "dan.arch", "dan.errors", "dan.loss", "dan.report", "dan.timing")
TRAINING = ("dan.engine", "dan.loop", "dan.search", "dan.search_control", "dan.search_result", "dan.methods",
            "dan.tune", "dan.suite", "dan.data")
RUN_LAYER = ("dan.engine", "dan.loop")

# Import edges (importer, imported) that close a cycle outside the files the change that added
# this test could touch. Each entry is a debt: whoever removes the edge removes the entry (the
# test fails on an entry whose edge is gone, so the list cannot go stale).
ALLOWED_CYCLE_EDGES: set[tuple[str, str]] = set()


def modules() -> dict[str, str]:
    """``dan`` module name -> file path, for every ``.py`` under ``dan/``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(PKG):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__pycache__")))
        for f in sorted(filenames):
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join(rel)] = os.path.join(dirpath, f)
    return out


def _is_package(path: str) -> bool:
    return os.path.basename(path) == "__init__.py"


def _target(name: str, mods: dict) -> str | None:
    """The longest ``dan`` module that ``name`` (a dotted name) starts with."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in mods:
            return cand
    return None


def imports(mods: dict) -> dict[str, dict[str, list[int]]]:
    """importer -> imported ``dan`` module -> line numbers of the statements."""
    graph: dict[str, dict[str, list[int]]] = {m: defaultdict(list) for m in mods}
    for mod, path in mods.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against the importing module's package
                    base = mod.split(".") if _is_package(path) else mod.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                # ``from pkg import sub`` names the submodule when there is one
                names = [f"{src}.{a.name}" if f"{src}.{a.name}" in mods else src for a in node.names]
            for name in names:
                t = _target(name, mods)
                if t is not None and t != mod:
                    graph[mod][t].append(node.lineno)
                elif t == mod and name == mod:
                    graph[mod][t].append(node.lineno)  # a module importing itself
    return graph


def strongly_connected(nodes, edges) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (or a self-loop)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):  # iterative would be longer; the package is ~60 modules deep at most
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def _cycle_in(comp: list[str], edges) -> list[str]:
    """One concrete cycle through the first module of a strongly connected component."""
    start, inside = comp[0], set(comp)
    # breadth-first from start back to start, inside the component
    prev, frontier, seen = {}, [start], {start}
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges.get(v, ())):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [start] + path[::-1][1:] + [start] if v != start else [start, start]
                if w in inside and w not in seen:
                    seen.add(w)
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp


def _edge(graph, mods, a: str, b: str) -> str:
    lines = ",".join(map(str, sorted(set(graph[a][b]))))
    return f"{a} -> {b} ({os.path.relpath(mods[a], ROOT)}:{lines})"


def describe_cycles(graph, mods, skip: set = frozenset()) -> list[str]:
    """One entry per strongly connected component: a concrete cycle, then every import edge
    inside the component (any of which may be the one to cut)."""
    edges = {a: {b for b in bs if (a, b) not in skip} for a, bs in graph.items()}
    out = []
    for comp in strongly_connected(mods, edges):
        cyc = _cycle_in(comp, edges)
        inside = [_edge(graph, mods, a, b) for a in comp for b in sorted(edges[a]) if b in comp]
        out.append(f"cycle among {{{', '.join(comp)}}}: " + " ; ".join(_edge(graph, mods, a, b)
                                                             for a, b in zip(cyc, cyc[1:]))
                   + "\n    edges inside the cycle:\n      " + "\n      ".join(inside))
    return out


def _under(mod: str, prefixes) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def test_the_graph_sees_every_kind_of_import(tmp_path):
    """The parser itself: module-level, function-level, relative and ``from pkg import sub``."""
    pkg = tmp_path / "dan"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import dan.b\n")
    (pkg / "b.py").write_text("def f():\n    from dan.sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("from .c import thing\n")
    (pkg / "sub" / "c.py").write_text("def g():\n    from ..a import x\n")
    global ROOT
    old = ROOT
    ROOT = str(tmp_path)
    try:
        mods = {"dan": str(pkg / "__init__.py"), "dan.a": str(pkg / "a.py"), "dan.b": str(pkg / "b.py"),
                "dan.sub": str(pkg / "sub" / "__init__.py"), "dan.sub.c": str(pkg / "sub" / "c.py")}
        g = imports(mods)
        assert {k: sorted(v) for k, v in g.items() if v} == {
            "dan.a": ["dan.b"], "dan.b": ["dan.sub.c"], "dan.sub": ["dan.sub.c"], "dan.sub.c": ["dan.a"]}
        found = describe_cycles(g, mods)
        assert len(found) == 1 and found[0].startswith("cycle among {dan.a, dan.b, dan.sub.c}: dan.a -> dan.b")
    finally:
        ROOT = old


def test_no_import_cycle():
    mods = modules()
    graph = imports(mods)
    stale = sorted(e for e in ALLOWED_CYCLE_EDGES if e[1] not in graph.get(e[0], {}))
    assert not stale, f"allow-listed edges that no longer exist (remove them from ALLOWED_CYCLE_EDGES): {stale}"
    cycles = describe_cycles(graph, mods, skip=ALLOWED_CYCLE_EDGES)
    assert not cycles, "import cycles in dan/:\n" + "\n".join(cycles)


def test_low_layers_import_nothing_from_the_training_side():
    mods = modules()
    graph = imports(mods)
    bad = [_edge(graph, mods, a, b) for a in sorted(graph) if _under(a, LOW)
           for b in sorted(graph[a]) if _under(b, TRAINING)]
    assert not bad, "upward imports from the low layers:\n" + "\n".join(bad)


def test_methods_do_not_import_the_run_layer():
    mods = modules()
    graph = imports(mods)
    bad = [_edge(graph, mods, a, b) for a in sorted(graph) if _under(a, ("dan.methods",))
           for b in sorted(graph[a]) if _under(b, RUN_LAYER)]
    assert not bad, "methods importing the run layer (hand them what they need instead):\n" + "\n".join(bad)


def test_every_module_is_seen():
    """The walk finds the package (a guard against a test that passes on an empty graph)."""
    mods = modules()
    for name in ("dan", "dan.engine", "dan.methods", "dan.methods.kd", "dan.cost", "dan.loss"):
        assert name in mods


# Sizes a reader can hold in their head (issue 13): a longer function or class is split by what
# it does (see graph.analyze's handler table, the search's control and result modules).
MAX_FUNCTION_LINES = 80
MAX_CLASS_LINES = 200


def sizes(source: str) -> list[tuple[str, str, int]]:
    """(kind, qualified name, lines) of every function and class in ``source``."""
    out = []

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                kind = "class" if isinstance(child, ast.ClassDef) else "function"
                name = f"{prefix}{child.name}"
                out.append((kind, name, child.end_lineno - child.lineno + 1))
                walk(child, name + ".")
            else:
                walk(child, prefix)

    walk(ast.parse(source), "")
    return out


def test_sizes_are_measured_by_hand_numbers():
    src = "def f():\n    x = 1\n    return x\n\n\nclass C:\n    def g(self):\n        pass\n"
    assert sizes(src) == [("function", "f", 3), ("class", "C", 3), ("function", "C.g", 2)]


def test_no_function_or_class_in_dan_is_too_long():
    too_long = []
    for mod, path in sorted(modules().items()):
        with open(path) as f:
            for kind, name, n in sizes(f.read()):
                limit = MAX_CLASS_LINES if kind == "class" else MAX_FUNCTION_LINES
                if n > limit:
                    too_long.append(f"{mod}.{name}: {kind} of {n} lines (> {limit})")
    assert not too_long, "split these by what they do:\n" + "\n".join(too_long)
