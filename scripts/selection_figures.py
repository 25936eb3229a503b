"""Write the benchmark figures ``--method auto`` ranks by into the method and model cards.

``auto`` (:func:`CTNormalizeLib.methods.choose_auto`) ranks the complete methods by
``selection.figures.l1_gap_closed`` of their cards: the held-out-physics column first,
then the in-distribution one. This script takes both from benchmark JSON files, so the
figures in the cards are always ones a benchmark measured::

    .venv/bin/python scripts/selection_figures.py \\
        --quality benchmarks/results/quality.json \\
        --heldout benchmarks/results/heldout_native/heldout_physics.json [--dry-run]

In-distribution: the L1-in-the-body gap closed of ``quality.json`` (medians over runs).
Held-out physics: the median over cases of ``gap_closed_body`` of the held-out benchmark
(``--heldout``; else the held-out column of ``quality.json``), and with ``--heldout`` also
the medians over the cases that change the kernel and over the noise-only cases (the
nominal source and target kernels equal), which ``auto`` uses for those kinds of pairs
(:func:`CTNormalizeLib.methods.pair_kind`). Only the clean texture (the default) is
ranked; a method missing from a file keeps ``null`` in that column.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS_DIR = ROOT / "Resources" / "Methods"
MODELS_DIR = ROOT / "Resources" / "Models"


def _card_path(name: str) -> Path | None:
    for p in (METHODS_DIR / f"{name}.json", MODELS_DIR / name / "card.json"):
        if p.is_file():
            return p
    return None


def _method_name(label: str) -> str | None:
    """``classical:classical`` -> ``classical``; texture variants (``[target]``) and others -> None."""
    if "[" in label or ":" not in label:
        return None
    return label.split(":", 1)[1]


def in_distribution(quality: dict) -> dict:
    out = {}
    for label, table in quality.get("summary", {}).get("per_method", {}).items():
        name = _method_name(label)
        g = table.get("l1_body_hu", {}).get("gap_closed")
        if name and g is not None:
            out[name] = round(float(g), 3)
    return out


def heldout(per_method: dict) -> dict:
    out = {}
    for label, row in per_method.items():
        name = _method_name(label)
        g = row.get("gap_closed_body")
        if name and g is not None:
            out[name] = round(float(g), 3)
    return out


def _kernel(spec: str):
    fields = dict(kv.split("=", 1) for kv in spec.split(",") if "=" in kv)
    return fields.get("kernel")


def heldout_by_kind(result: dict) -> dict:
    """``{kind: {method: median gap closed in the body}}`` over the held-out cases of each kind."""
    import statistics

    vals: dict = {}
    for case in result.get("cases", []):
        kind = "noise_only" if _kernel(case["source_spec"]) == _kernel(case["target_spec"]) else "kernel_change"
        for label, row in case.get("rows", {}).items():
            name, g = _method_name(label), row.get("gap_closed_body")
            if name and g is not None:
                vals.setdefault(kind, {}).setdefault(name, []).append(float(g))
    return {k: {n: round(statistics.median(v), 3) for n, v in d.items()} for k, d in vals.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quality", required=True, help="quality.json of benchmarks/quality.py")
    ap.add_argument("--heldout", help="heldout_physics.json of benchmarks/heldout_physics.py (overrides the "
                                      "held-out column of quality.json)")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    q = json.loads(Path(args.quality).read_text(encoding="utf-8"))
    ind = in_distribution(q)
    if args.heldout:
        h = json.loads(Path(args.heldout).read_text(encoding="utf-8"))
        held, hsrc = heldout(h.get("summary", {})), f"{Path(args.heldout).name} (size {h.get('size')})"
        by_kind = heldout_by_kind(h)
    else:
        held = heldout(q.get("heldout_physics", {}).get("per_method", {}))
        hsrc = f"{Path(args.quality).name} held-out column (size {q.get('heldout_physics', {}).get('size')})"
        by_kind = {}
    names = sorted(set(ind) | set(held))
    if not names:
        print("No method figures found in the benchmark files.", file=sys.stderr)
        return 2
    for name in names:
        path = _card_path(name)
        if path is None:
            print(f"{name}: no card (Resources/Methods or Resources/Models); skipped")
            continue
        card = json.loads(path.read_text(encoding="utf-8"))
        card["selection"] = {
            "benchmark": (f"in_distribution: {Path(args.quality).name} (benchmark version "
                          f"{q.get('benchmark_version')}, size {q.get('size')}); heldout_physics: {hsrc}; "
                          "L1 gap closed in the body, clean texture"),
            "figures": {"l1_gap_closed": {"in_distribution": ind.get(name), "heldout_physics": held.get(name),
                                          **{f"heldout_physics_{k}": d.get(name) for k, d in sorted(by_kind.items())}}},
        }
        print(f"{name}: {card['selection']['figures']['l1_gap_closed']} -> {path.relative_to(ROOT)}")
        if not args.dry_run:
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
            tmp.replace(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
