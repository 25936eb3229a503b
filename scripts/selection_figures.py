"""Write measured benchmark figures into the method and model cards (what ``auto`` ranks by).

``auto`` (:func:`CTNormalizeLib.methods.choose_auto`) ranks the complete methods by
``selection.figures.l1_gap_closed`` of their cards: the held-out-physics column for the
plan's kind of pair first, then the in-distribution one. This script takes both from
benchmark JSON files, so every figure in a card is one a benchmark measured::

    .venv/bin/python scripts/selection_figures.py \\
        --quality benchmarks/results/quality.json [--quality a_later_run_of_new_methods.json ...] \\
        --heldout benchmarks/results/heldout_native/heldout_physics.json \\
        [--heldout another_heldout_run.json ...] [--only NAME ...] [--dry-run]

* ``selection.figures.l1_gap_closed``: ``in_distribution`` = the L1-in-the-body gap closed
  of ``quality.json`` (medians over runs); ``heldout_physics`` = the median over the
  held-out cases of ``gap_closed_body``; ``heldout_physics_kernel_change`` /
  ``heldout_physics_noise_only`` = the same over the cases that change the kernel / keep
  it (nominal source and target kernels equal), see :func:`CTNormalizeLib.methods.pair_kind`.
  ``l1_gap_closed_target``: the same columns for the ``target`` texture (``auto`` ranks a
  ``--texture target`` request by them).
* ``selection.heldout_kernel_change_directions``: ``smoothing`` / ``sharpening``, the directions
  of the held-out cases that change the kernel; ``auto`` ranks a pair in another direction by
  the in-distribution column alone (:func:`CTNormalizeLib.methods.heldout_applies`).
* ``metrics``: the card's method next to the classical chain and BM4D, both textures,
  both columns (L1 body and lung gap closed, emphysema-index error, Dice, NPS similarity,
  radiomics CCC), and a one-line ``summary`` that ``ctnormalize models`` and the Slicer
  panel show.

Several ``--heldout`` files (e.g. a BM4D run made separately) are merged case by case.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
METHODS_DIR = ROOT / "Resources" / "Methods"
MODELS_DIR = ROOT / "Resources" / "Models"
COMPARE = ("classical:classical", "classical:classical[target]", "bm4d", "bm4d+mtf_ratio")


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


def _r(x, nd=3):
    return None if x is None else round(float(x), nd)


def in_distribution_rows(quality: dict) -> dict:
    """``{label: {metric: value}}`` from ``quality.json`` (medians over runs)."""
    s = quality.get("summary", {})
    rad = s.get("radiomics", {})
    out = {}
    for label, t in s.get("per_method", {}).items():
        g = lambda m: t.get(m, {}).get("gap_closed")  # noqa: E731
        o = lambda m: t.get(m, {}).get("output")  # noqa: E731
        out[label] = {"l1_body_gap": _r(g("l1_body_hu")), "l1_lung_gap": _r(g("l1_lung_hu")),
                      "ei_error_pt": _r(o("ei_error_pt")), "emphysema_dice": _r(o("emphysema_dice")),
                      "nps_similarity": _r(o("nps_similarity")),
                      "radiomics_median_ccc": _r(rad.get(label, {}).get("median_ccc"))}
    return out


def merged_quality(files: list) -> dict:
    """Several ``quality.json`` runs of the same benchmark (version, size, cases, protocols) merged method by method.

    A method benchmarked later (e.g. a new model, with ``--methods``) joins the others'
    figures without rerunning them; files of different benchmarks are refused.
    """
    base = json.loads(Path(files[0]).read_text(encoding="utf-8"))
    same = ("benchmark_version", "size", "cases", "source_protocols", "targets")
    for f in files[1:]:
        q = json.loads(Path(f).read_text(encoding="utf-8"))
        diff = [k for k in same if q.get(k) != base.get(k)]
        if diff or len(q.get("runs", [])) != len(base.get("runs", [])):
            raise SystemExit(f"{f} is not the same benchmark as {files[0]} (differs in {', '.join(diff) or 'runs'})")
        for k in ("per_method", "radiomics"):
            base.setdefault("summary", {}).setdefault(k, {}).update(q.get("summary", {}).get(k, {}))
        for mine, theirs in zip(base["runs"], q["runs"]):
            if (mine.get("case"), mine.get("source"), mine.get("target")) != (theirs.get("case"), theirs.get("source"),
                                                                           theirs.get("target")):
                raise SystemExit(f"{f}: runs are not in the same order as in {files[0]}")
            mine.setdefault("values", {}).update(theirs.get("values", {}))
        base["methods"] = list(dict.fromkeys([*base.get("methods", []), *q.get("methods", [])]))
    return base


def _kernel(spec: str):
    from CTNormalizeLib.protocols import parse_spec

    return parse_spec(spec).kernel


def merged_cases(files: list) -> tuple[list, str]:
    """The held-out cases of several runs, rows merged by case name; and a description."""
    cases: dict = {}
    desc = []
    for f in files:
        h = json.loads(Path(f).read_text(encoding="utf-8"))
        desc.append(f"{Path(f).parent.name}/{Path(f).name} (size {h.get('size')}, source "
                    f"{h.get('source_mode', 'explicit')})")
        for c in h.get("cases", []):
            have = cases.setdefault(c["case"], {**c, "rows": {}})
            have["rows"].update(c.get("rows", {}))
    return list(cases.values()), "; ".join(desc)


def heldout_rows(cases: list) -> dict:
    """``{label: {metric: median over cases}}`` plus the L1 gap per kind of pair."""
    vals: dict = {}
    for case in cases:
        kind = "noise_only" if _kernel(case["source_spec"]) == _kernel(case["target_spec"]) else "kernel_change"
        for label, row in case.get("rows", {}).items():
            d = vals.setdefault(label, {})
            for key, name in (("gap_closed_body", "l1_body_gap"), ("gap_closed_lung", "l1_lung_gap"),
                              ("ei_error_pt", "ei_error_pt"), ("nps_similarity", "nps_similarity")):
                if row.get(key) is not None:
                    d.setdefault(name, []).append(float(row[key]))
            if row.get("gap_closed_body") is not None:
                d.setdefault(f"l1_body_gap_{kind}", []).append(float(row["gap_closed_body"]))
    return {label: {k: _r(statistics.median(v)) for k, v in d.items()} for label, d in vals.items()}


def kernel_change_directions(cases: list) -> list:
    """``smoothing`` / ``sharpening``: the directions of the held-out cases that change the kernel (by the
    nominal kernels' MTF50), which ``auto`` needs to know the kernel-change column applies to a pair."""
    from CTNormalizeLib.signature.kernel_class import as_transfer
    from CTNormalizeLib.signature.signature import kernel_direction

    out = set()
    for case in cases:
        s, t = _kernel(case["source_spec"]), _kernel(case["target_spec"])
        if s and t and s != t:
            out.add(kernel_direction(as_transfer(s).mtf50, as_transfer(t).mtf50))
    return sorted(out)


def _columns(ind_row: dict, held_row: dict) -> dict:
    """The ranked columns of one label: in distribution, held-out (all cases, per kind of pair)."""
    return {"in_distribution": ind_row.get("l1_body_gap"), "heldout_physics": held_row.get("l1_body_gap"),
            "heldout_physics_kernel_change": held_row.get("l1_body_gap_kernel_change"),
            "heldout_physics_noise_only": held_row.get("l1_body_gap_noise_only")}


def _summary(label: str, ind: dict, held: dict) -> str:
    def pair(lab):
        i = ind.get(lab, {}).get("l1_body_gap")
        h = held.get(lab, {})
        return i, h.get("l1_body_gap_kernel_change"), h.get("l1_body_gap_noise_only")

    def fmt(x):
        return "—" if x is None else f"{x:.3f}"

    i, k, n = pair(label)
    text = (f"L1 gap closed: in distribution {fmt(i)}, held-out physics {fmt(k)} (kernel change) / "
            f"{fmt(n)} (dose only)")
    others = []
    for lab, short in (("classical:classical", "classical chain"), ("bm4d", "BM4D"),
                       ("bm4d+mtf_ratio", "BM4D+mtf_ratio")):
        if lab == label or (lab not in ind and lab not in held):
            continue
        oi, ok, on = pair(lab)
        others.append(f"{short} {fmt(oi)}, {fmt(ok)} / {fmt(on)}")
    return text + (". Same figures: " + "; ".join(others) + "." if others else ".")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quality", action="append", required=True,
                    help="quality.json of benchmarks/quality.py (repeatable: runs of other methods on the same "
                         "benchmark, merged by method)")
    ap.add_argument("--heldout", action="append", default=[],
                    help="heldout_physics.json of benchmarks/heldout_physics.py (repeatable; merged by case)")
    ap.add_argument("--only", action="append", default=[],
                    help="write only this method's card (repeatable): a new method benchmarked next to the others "
                         "leaves their cards, measured on more runs, as they are")
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    from CTNormalizeLib.contracts.card import card_problems
    from CTNormalizeLib.io.atomic import atomic_write_text
    from CTNormalizeLib.io.jsonfile import dumps
    from CTNormalizeLib.models.registry import write_card

    q = merged_quality(args.quality)
    ind = in_distribution_rows(q)
    cases, hsrc = merged_cases(args.heldout) if args.heldout else ([], "none")
    held = heldout_rows(cases)
    names = sorted({n for n in map(_method_name, set(ind) | set(held)) if n})
    if args.only:
        missing = sorted(set(args.only) - set(names))
        if missing:
            print(f"--only {', '.join(missing)}: not in the benchmark files (they hold {', '.join(names)})",
                  file=sys.stderr)
            return 2
        names = sorted(args.only)
    if not names:
        print("No method figures found in the benchmark files.", file=sys.stderr)
        return 2
    qsrc = (" + ".join(f"{Path(f).parent.name}/{Path(f).name}" for f in args.quality) + " (benchmark version "
            f"{q.get('benchmark_version')}, size {q.get('size')}, {len(q.get('runs', []))} runs)")
    updated = []
    for name in names:
        path = _card_path(name)
        if path is None:
            print(f"{name}: no card (Resources/Methods or Resources/Models); skipped")
            continue
        label = next(lab for lab in set(ind) | set(held) if _method_name(lab) == name)
        h = held.get(label, {})
        covered = sum(label in r.get("values", {}) for r in q.get("runs", []))
        qsrc_m = qsrc.replace(f"{len(q.get('runs', []))} runs)", f"{covered} of {len(q.get('runs', []))} runs "
                                                                  "covered by this method)")
        card = json.loads(path.read_text(encoding="utf-8"))
        card["selection"] = {
            "benchmark": f"in_distribution: {qsrc_m}; heldout_physics: {hsrc}; L1 gap closed in the body, "
                         "clean texture (l1_gap_closed) and target texture (l1_gap_closed_target)",
            "figures": {"l1_gap_closed": _columns(ind.get(label, {}), h)},
        }
        if h.get("l1_body_gap_kernel_change") is not None:  # only where held-out kernel changes were measured
            card["selection"]["heldout_kernel_change_directions"] = kernel_change_directions(
                [c for c in cases if label in c.get("rows", {})])
        tl = f"{label}[target]"
        if tl in ind or tl in held:
            card["selection"]["figures"]["l1_gap_closed_target"] = _columns(ind.get(tl, {}), held.get(tl, {}))
        rows = [lab for lab in (label, f"{label}[target]", *COMPARE) if lab in ind or lab in held]
        rows = list(dict.fromkeys(rows))
        card["metrics"] = {
            "source": {"in_distribution": qsrc_m, "heldout_physics": hsrc},
            "definitions": "l1_*_gap: gap closed in L1 against the replicate floor; ei_error_pt: emphysema "
                           "index (LAA-950) error in points; nps_similarity: 1 = the target's noise texture; "
                           "held-out values are medians over the independent simulator's cases",
            "in_distribution": {lab: ind[lab] for lab in rows if lab in ind},
            "heldout_physics": {lab: held[lab] for lab in rows if lab in held},
            "summary": _summary(label, ind, held),
        }
        print(f"{name}: {card['selection']['figures']['l1_gap_closed']}\n  {card['metrics']['summary']}\n"
              f"  -> {path.relative_to(ROOT)}")
        updated.append((path, card))
    # every model card is checked against the contract the registry reads it with before any card is written:
    # a refused card does not leave the others half updated
    refused = [f"{path.relative_to(ROOT)}: {'; '.join(card_problems(card))}" for path, card in updated
               if path.parent.parent == MODELS_DIR and card_problems(card)]
    if refused:
        print("Not writing any card; these are not valid model cards:\n  " + "\n  ".join(refused), file=sys.stderr)
        return 2
    for path, card in [] if args.dry_run else updated:
        if path.parent.parent == MODELS_DIR:
            write_card(path, card)
        else:
            atomic_write_text(path, dumps(card, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
