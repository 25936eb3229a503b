"""Choose the clean chain's Wiener prior (the structure contrast its kernel step assumes) on validation scans.

Usage (from the repository root)::

    .venv/bin/python scripts/choose_wiener_signal.py --seeds 60,61,62,63,64,65,66,67 --targets presets
    .venv/bin/python scripts/choose_wiener_signal.py --dry-run

Where the kernel step sharpens, the MTF ratio is Wiener-regularized with
``lambda = (noise / prior)^2`` (:func:`CTNormalizeLib.classical.mtf_ratio.wiener_lambda`): the
larger the structure contrast assumed, the more the step trusts the pixels and amplifies what
noise the denoiser left. In the chain's clean texture (denoise, then the kernel step) the prior is
:data:`~CTNormalizeLib.classical.mtf_ratio.CLEAN_CHAIN_SIGNAL_SCALE_HU`, chosen here; the target
texture and the ``mtf_ratio`` method alone keep ``SIGNAL_SCALE_HU`` (their noise is kept, not error). This script runs every kernel-change case of the randomized
validation recipe (``choose_nlm_blend.py``: domain-randomized untagged sources of our own
simulator, phantom seeds never used for training) with each candidate contrast, through the
classical chain and through the shipped default denoiser's chain (:data:`DENOISER`, clean
texture), and scores a candidate by the mean of the two methods' pooled L1 gap closed in the
body. The best is taken unless it beats the current value by no more than one bootstrap
standard error of the difference (a rule fixed before the first run). The cases whose target
is sharper than the source's measured transfer (MTF50) are reported too, not used to decide.

The constant lives in code (:data:`CTNormalizeLib.classical.mtf_ratio.CLEAN_CHAIN_SIGNAL_SCALE_HU`); the
script writes its record (candidates, figures, cases, choice) into the classical method's card
``Resources/Methods/classical.json`` under ``validation.wiener_signal_hu`` (atomically), and a
test holds the constant to the recorded choice. The independent simulator's held-out cases are
never used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

FRESH_SEEDS = (60, 61, 62, 63, 64, 65, 66, 67)
CANDIDATES_HU = (100.0, 70.0, 50.0, 35.0, 25.0)
DENOISER = "ctn-denoise-v2c"
CARD = ROOT / "Resources" / "Methods" / "classical.json"
RULE = ("the candidate with the highest mean of the classical chain's and the default denoiser's pooled L1 gap "
        "closed on kernel-change validation scans, unless it beats the current value by no more than one "
        "bootstrap standard error of the difference")


def decide(closed: dict, gaps: list, current: float) -> tuple[float, dict]:
    """``(chosen contrast, figures)`` from ``{candidate: per-case HU closed}`` (the two methods' average)."""
    from choose_nlm_blend import difference_se, pooled_gap

    scores = {c: pooled_gap(v, gaps) for c, v in closed.items()}
    best = max(scores, key=scores.get)
    se = difference_se(closed[best], closed[current], gaps) if best != current else 0.0
    chosen = best if scores[best] - scores[current] > se else current
    return chosen, {"pooled_gap_closed": {f"{c:g}": round(s, 4) for c, s in scores.items()},
                    "best": best, "difference_se": round(se, 4)}


def main(argv=None) -> int:
    import choose_nlm_blend

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="print the decision, leave the card alone")
    choose_nlm_blend.add_validation_arguments(ap, FRESH_SEEDS)
    args = ap.parse_args(argv)

    from choose_nlm_blend import _l1, pooled_gap, validation_cases

    from CTNormalizeLib.classical import chain, mtf_ratio
    from CTNormalizeLib.inference.net_denoise import run_chain
    from CTNormalizeLib.io.atomic import atomic_write_text
    from CTNormalizeLib.io.jsonfile import dumps
    from CTNormalizeLib.models.registry import read_package
    from CTNormalizeLib.plan import make_plan
    from CTNormalizeLib.signature.signature import kernel_direction, pair_kind

    settings = choose_nlm_blend.validation_settings(args)
    if settings is None:
        return 2
    seeds, targets = settings
    pkg = read_package(ROOT / "Resources" / "Models" / DENOISER)
    current = float(mtf_ratio.CLEAN_CHAIN_SIGNAL_SCALE_HU)
    if current not in CANDIDATES_HU:
        print(f"The current value {current:g} HU is not among the candidates {CANDIDATES_HU}.", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    closed = {m: {c: [] for c in CANDIDATES_HU} for m in ("classical", DENOISER)}
    gaps, rows = [], []
    try:
        for _, s, t, src, tgt, rep in validation_cases("randomized", seeds=seeds, targets=targets):
            plan = make_plan(src, s, t, method="classical", device="cpu", texture="clean")
            if pair_kind(plan.source_signature, plan.target_signature) != "kernel_change":
                continue
            outs = {}
            for c in CANDIDATES_HU:
                mtf_ratio.CLEAN_CHAIN_SIGNAL_SCALE_HU = c
                outs[("classical", c)] = chain.run(src, plan).volume
                outs[(DENOISER, c)] = run_chain(pkg, src, plan).volume
            named = {f"{m}@{c:g}": v for (m, c), v in outs.items()}
            l1, l1_src, l1_rep = _l1(tgt, src, named, rep)
            if not l1_src > l1_rep:
                print(f"{s} -> {t}: no gap to close; skipped", flush=True)
                continue
            gaps.append(l1_src - l1_rep)
            for (m, c) in outs:
                closed[m][c].append(l1_src - l1[f"{m}@{c:g}"])
            sharper = kernel_direction(plan.source_signature.transfer.mtf50,
                                       plan.target_signature.transfer.mtf50) == "sharpening"
            rows.append({"source": s, "target": t, "sharpening": bool(sharper), "gap_hu": round(l1_src - l1_rep, 3),
                         "l1": {k: round(v, 3) for k, v in l1.items()}})
            print(f"{'sharpen' if sharper else 'smooth '} {s} -> {t}: gap {l1_src - l1_rep:.2f} HU; "
                  + ", ".join(f"{c:g}: {(l1_src - l1[f'classical@{c:g}']) / (l1_src - l1_rep):.3f}/"
                              f"{(l1_src - l1[f'{DENOISER}@{c:g}']) / (l1_src - l1_rep):.3f}" for c in CANDIDATES_HU),
                  flush=True)
    finally:
        mtf_ratio.CLEAN_CHAIN_SIGNAL_SCALE_HU = current
    if not gaps:
        print("No kernel-change validation case: nothing decided.", file=sys.stderr)
        return 1
    both = {c: list((np.asarray(closed["classical"][c]) + np.asarray(closed[DENOISER][c])) / 2) for c in CANDIDATES_HU}
    chosen, figures = decide(both, gaps, current)
    per_method = {m: {f"{c:g}": round(pooled_gap(v, gaps), 4) for c, v in closed[m].items()} for m in closed}
    sub = [i for i, r in enumerate(rows) if r["sharpening"]]
    sharpening = ({m: {f"{c:g}": round(pooled_gap([v[i] for i in sub], [gaps[i] for i in sub]), 4)
                       for c, v in closed[m].items()} for m in closed} if sub else {})
    record = {"rule": RULE, "script": "scripts/choose_wiener_signal.py", "seeds": list(seeds),
              "targets": list(targets), "denoiser": DENOISER, "candidates_hu": list(CANDIDATES_HU),
              "was_hu": current, "chosen_hu": chosen, "figures": figures, "per_method": per_method,
              "sharpening_cases": {"count": len(sub), "per_method": sharpening}, "cases": rows}
    print(json.dumps({k: record[k] for k in ("chosen_hu", "figures", "per_method", "sharpening_cases")}, indent=1))
    print(f"{len(gaps)} cases in {time.perf_counter() - t0:.0f} s; chosen {chosen:g} HU (was {current:g})")
    if not args.dry_run:
        card = json.loads(CARD.read_text(encoding="utf-8"))
        card.setdefault("validation", {})["wiener_signal_hu"] = record
        atomic_write_text(CARD, dumps(card, indent=2) + "\n")
        print(f"wrote the record into {CARD.relative_to(ROOT)}; set CLEAN_CHAIN_SIGNAL_SCALE_HU = {chosen:g} in "
              "CTNormalizeLib/classical/mtf_ratio.py if it changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
