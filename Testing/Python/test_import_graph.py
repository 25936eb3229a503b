"""The engine's import graph: no cycles, and no import from a lower layer into a higher one.

The graph is read from the source with ``ast`` (nothing is imported), counting every
import, also those inside functions: a lazy import still makes the lower module depend on
the higher one. ``from pkg import name`` is an edge to ``pkg.name`` when that is a module
and to ``pkg`` (its ``__init__``) otherwise.

The layer table is also in docs/DEVELOPING.md ("Layers"); change both together.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = "CTNormalizeLib"

# Lowest first. A module may import its own layer and the layers below it, never above.
# The ground floor (level 0) is importable from anywhere. A package not in the table fails
# test_every_module_has_a_layer: give a new package its place here (and in the docs).
LAYERS = [
    ("ground floor", {"imaging", "errors", "volume", "resources", "version", "testdata", "htmlreport",
                      "interruptible", "cancellation"}),
    ("contracts", {"contracts", "method_rows"}),
    ("io", {"io"}),
    ("protocols", {"protocols", "signature"}),
    ("simulate", {"simulate"}),
    ("classical", {"classical"}),
    ("models", {"models"}),
    ("inference", {"inference"}),
    ("quantify", {"quantify"}),
    ("evaluate", {"evaluate"}),
    ("reader studies", {"readerstudy"}),
    ("composition", {"normalization", "plan", "methods", "benchmark_methods"}),
    ("training", {"train"}),  # trains models and validates them against the methods run through normalize
    ("cohorts", {"cohort"}),  # many cases on Dask: runs normalize, quantify and the signature per case
    ("cli", {"cli", "__main__"}),
]
# The package root (CTNormalizeLib/__init__.py) is the public API: it may import anything,
# and no engine module imports it (that would close a cycle through the API's re-exports).

# Known violations, each with the reason it is still there (empty: keep it so).
ALLOWED: dict = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((ROOT / PKG).rglob("*.py"))}


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """Engine modules imported by module ``name`` (anywhere in its body)."""
    is_pkg = path.name == "__init__.py"
    package = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
        else:
            continue
        for t in targets:
            if t != PKG and not t.startswith(PKG + "."):
                continue
            while t not in modules and "." in t:  # `import a.b.c` of a name inside a module
                t = t.rsplit(".", 1)[0]
            if t != name:
                out.add(t)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _top(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def _level(name: str):
    top = _top(name)
    if top == "":
        return None  # the package root
    for i, (_, members) in enumerate(LAYERS):
        if top in members:
            return i
    raise KeyError(top)


def _upward(graph) -> list[tuple[str, str]]:
    bad = []
    for a, targets in graph.items():
        la = _level(a)
        for b in targets:
            lb = _level(b)
            if la is None:
                continue  # the API facade may import anything
            if lb is None or lb > la:
                bad.append((a, b))
    return sorted(bad)


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def _cycle_edges(graph, comp) -> list[tuple[str, str]]:
    members = set(comp)
    return sorted((a, b) for a in comp for b in graph[a] if b in members)


def test_every_module_has_a_layer():
    unknown = set()
    for name in _modules():
        try:
            _level(name)
        except KeyError:
            unknown.add(_top(name))
    assert not unknown, (f"Packages/modules without a layer: {sorted(unknown)}. Add them to LAYERS in "
                         "Testing/Python/test_import_graph.py and to the layer table in docs/DEVELOPING.md.")


def test_no_upward_imports():
    bad = [e for e in _upward(_graph()) if e not in ALLOWED]
    assert not bad, "Imports from a lower layer into a higher one (see LAYERS):\n" + "\n".join(
        f"  {a} -> {b}" for a, b in bad)


def test_no_import_cycles():
    graph = _graph()
    cycles = _cycles(graph)  # strict: an allowed upward edge may not close a cycle
    assert not cycles, "Import cycles:\n" + "\n".join(
        "  " + ", ".join(f"{a} -> {b}" for a, b in _cycle_edges(graph, c)) for c in cycles)


def test_allow_list_is_current_and_only_names_the_leads_files():
    """Every allowed edge still exists (else delete it) and sits in a file the lead owns."""
    lead = ("CTNormalizeLib.normalization", "CTNormalizeLib.cli.cmd_normalize", "CTNormalizeLib.plan",
            "CTNormalizeLib.inference.engine", "CTNormalizeLib.protocols")
    graph = _graph()
    stale = [e for e in ALLOWED if e[1] not in graph.get(e[0], ())]
    assert not stale, f"Allowed edges that no longer exist; remove them from ALLOWED: {stale}"
    assert all(any(a == m or a.startswith(m + ".") for m in lead) for a, _ in ALLOWED), ALLOWED


@pytest.mark.parametrize("edge, expected", [
    # the walker itself: planted violations are found
    ({"CTNormalizeLib.io.read": {"CTNormalizeLib.cli.events"}}, "upward"),
    ({"CTNormalizeLib.io.a": {"CTNormalizeLib.io.b"}, "CTNormalizeLib.io.b": {"CTNormalizeLib.io.a"}}, "cycle"),
    ({"CTNormalizeLib.quantify.x": {"CTNormalizeLib"}}, "upward"),
    ({"CTNormalizeLib.cli.x": {"CTNormalizeLib.imaging.body"}, "CTNormalizeLib.imaging.body": set()}, "ok"),
])
def test_the_checks_catch_planted_violations(edge, expected):
    graph = {k: set(v) for k, v in edge.items()}
    for targets in list(graph.values()):
        for t in targets:
            graph.setdefault(t, set())
    got = "upward" if _upward(graph) else ("cycle" if _cycles(graph) else "ok")
    assert got == expected


def test_walker_reads_relative_and_lazy_imports(tmp_path):
    mods = {"CTNormalizeLib.io.read": None, "CTNormalizeLib.io.dicom": None, "CTNormalizeLib.io": None,
            "CTNormalizeLib.errors": None}
    src = tmp_path / "dicom.py"
    src.write_text("from ..errors import X\n\ndef f():\n    from .read import g\n    from . import read\n")
    assert _imports("CTNormalizeLib.io.dicom", src, mods) == {"CTNormalizeLib.errors", "CTNormalizeLib.io.read"}


def test_docs_layer_table_matches_layers():
    """docs/DEVELOPING.md ("Layers") lists the same layers, in the same order, as LAYERS."""
    text = (ROOT / "docs" / "DEVELOPING.md").read_text(encoding="utf-8")
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "`" in line]
    documented = [{re.sub(r"(/|\.py)$", "", n) for n in re.findall(r"`([^`]+)`", row.split("|")[2])} for row in rows]
    assert documented == [members for _, members in LAYERS]
