"""The independent simulator is for evaluation only: training and our simulator never import it,
it shares no physics code with ours, and BM4D (non-commercial) is never an engine dependency."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import CTNormalizeLib

PKG = Path(CTNormalizeLib.__file__).parent
HELDOUT = "CTNormalizeLib.evaluate.independent_sim"

_WALK = """
import importlib, json, pkgutil, sys
import CTNormalizeLib.train, CTNormalizeLib.simulate
names = []
for pkg in (CTNormalizeLib.train, CTNormalizeLib.simulate):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        names.append(m.name)
        importlib.import_module(m.name)
import CTNormalizeLib.normalization, CTNormalizeLib.benchmark_methods, CTNormalizeLib.cli.main
print(json.dumps({"imported": names, "modules": sorted(sys.modules)}))
"""


def test_train_and_simulate_never_import_the_independent_simulator():
    out = subprocess.run([sys.executable, "-c", _WALK], capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert any(n.startswith("CTNormalizeLib.train.") for n in res["imported"])
    assert any(n.startswith("CTNormalizeLib.simulate.") for n in res["imported"])
    leaked = [m for m in res["modules"] if m.startswith(HELDOUT) or m == "CTNormalizeLib.evaluate.heldout_benchmark"]
    assert not leaked, f"training/simulator/engine imports pull in the held-out simulator: {leaked}"
    assert "bm4d" not in res["modules"] and "CTNormalizeLib.evaluate.bm4d_baseline" not in res["modules"]


def _imports(path: Path) -> list[tuple[str, list]]:
    """(absolute module, imported names) of every import in a file of the package."""
    tree = ast.parse(path.read_text())
    rel = path.relative_to(PKG.parent).with_suffix("").parts
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(rel[:-1]) if node.level else []
            if node.level > 1:
                base = base[: len(base) - (node.level - 1)]
            mod = ".".join(base + ([node.module] if node.module else []))
            out.append((mod, [a.name for a in node.names]))
    return out


def test_the_independent_simulator_shares_no_physics_code_with_ours():
    allowed = {"CTNormalizeLib.simulate": {"make_phantom"},  # truth volumes only
               "CTNormalizeLib.protocols.kernels": {"KERNEL_CLASSES", "mtf50"}}  # class labels only
    files = sorted((PKG / "evaluate" / "independent_sim").glob("*.py"))
    assert files
    for f in files:
        for mod, names in _imports(f):
            if mod.startswith("CTNormalizeLib.simulate") or mod.startswith("CTNormalizeLib.protocols") \
                    or mod.startswith("CTNormalizeLib.classical"):
                assert mod in allowed and set(names) <= allowed[mod], f"{f.name} imports {mod}: {names}"


def test_no_module_outside_evaluate_imports_bm4d():
    for f in PKG.rglob("*.py"):
        if f.parent.name == "evaluate" and f.name in ("bm4d_baseline.py", "heldout_benchmark.py"):
            continue
        for mod, _ in _imports(f):
            assert mod != "bm4d", f"{f} imports bm4d"
