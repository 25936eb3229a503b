"""Decide, per kind of pair, whether a denoiser's blend picks its NLM residual for each scan; record it in its card.

Usage (from the repository root)::

    .venv/bin/python scripts/choose_residual_by_risk.py Resources/Models/ctn-denoise-v2c
    .venv/bin/python scripts/choose_residual_by_risk.py Resources/Models/ctn-denoise-v2c --dry-run

A learned denoiser's clean texture averages the network with calibrated NLM; the card fixes
the weight and how much noise NLM leaves (``chain.nlm_blend``, ``chain.nlm_residual``,
chosen by ``scripts/choose_nlm_blend.py``). With ``chain.nlm_residual_choice: risk`` the residual
is instead picked for each scan by Stein's unbiased risk estimate
(:mod:`CTNormalizeLib.classical.blend_risk`), the weight staying the card's. This script runs
the package both ways on **fresh** validation scans of our own simulator (the randomized
recipe of ``choose_nlm_blend.py`` on phantom seeds 44-47 by default: the card's blend was
chosen on seeds 40-43, where it has the winner's advantage) and takes ``risk`` for a kind of
pair only where its pooled L1 gap closed beats the card's (a rule fixed before its first run).
``--kinds`` decides only some kinds and keeps the card's decision for the others (each kind's
record says on which seeds and targets it was made); ``--targets presets`` adds kernel changes to
the sharp kernel (lung-detail's: sharpening pairs) to the recipe's smooth and standard targets.
Writes ``chain.nlm_residual_choice`` and ``chain.residual_choice_validation`` (atomically);
the independent simulator's held-out cases are never used.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

#: phantoms of the fresh validation set (choose_nlm_blend.py uses 40-43; training 0-39; benchmarks >= 1000)
FRESH_SEEDS = (44, 45, 46, 47)
RULE = ("per kind, the residual picked for each scan (Stein's unbiased risk estimate) only where its pooled L1 gap "
        "closed beats the card's residual on fresh validation scans")


def with_choice(pkg, choice: str):
    """``pkg`` with ``chain.nlm_residual_choice`` = ``choice`` for every kind."""
    chain = dict(pkg.card.get("chain") or {}, nlm_residual_choice=choice)
    return dataclasses.replace(pkg, card=dict(pkg.card, chain=chain))


def decide(closed: dict, gaps: list) -> tuple[str, dict]:
    """``("risk" | "card", figures)`` from the per-case HU closed of both ways: risk only if its pooled gap is higher."""
    from choose_nlm_blend import difference_se, pooled_gap

    card, risk = pooled_gap(closed["card"], gaps), pooled_gap(closed["risk"], gaps)
    se = difference_se(closed["risk"], closed["card"], gaps)
    return ("risk" if risk > card else "card"), {"card": round(card, 4), "risk": round(risk, 4),
                                                  "difference_se": round(se, 4), "cases": len(gaps)}


def merged_chain(chain: dict, decided: dict, blend: dict) -> dict:
    """``chain`` with the kinds in ``decided`` ({kind: {"choice", "seeds", "targets", "figures", "cases"}}) set.

    Another kind's earlier decision stays only if it was measured with the same ``blend`` (weights,
    residuals, flips): a decision measured with another blend says nothing about this one (it is dropped,
    and said on stderr). A kind decided again keeps its earlier record under ``superseded``.
    """
    from CTNormalizeLib.inference.net_denoise import chain_value

    before = per_kind_record(chain.get("residual_choice_validation") or {})
    same_blend = before.get("blend") == blend
    old = before.get("kinds") or {}
    kept = {k: v for k, v in old.items() if k not in decided} if same_blend else {}
    for k in sorted(set(old) - set(decided) - set(kept)):
        print(f"{k}: its per-scan decision was measured with another blend; dropped (decide it again)", file=sys.stderr)
    def was(kind):  # the card's decision for a kind so far (one value may stand for every kind)
        return chain_value({"chain": chain}, "nlm_residual_choice", kind, "card")

    kinds = dict(kept)
    for k, d in decided.items():
        record = {f: v for f, v in d.items() if f != "choice"}
        if same_blend and k in old:
            earlier = {f: v for f, v in old[k].items() if f != "superseded"}
            record["superseded"] = [*old[k].get("superseded", []), {**earlier, "choice": was(k)}]
        kinds[k] = record
    choice = {**{k: was(k) for k in kept}, **{k: d["choice"] for k, d in decided.items()}}
    record = {"rule": RULE, "script": "scripts/choose_residual_by_risk.py", "blend": blend, "kinds": kinds}
    return {**chain, "nlm_residual_choice": choice, "residual_choice_validation": record}


def per_kind_record(record: dict) -> dict:
    """A ``residual_choice_validation`` record in the per-kind form (``kinds``); the first one, written
    before ``--kinds`` existed, held one set of seeds with figures and cases per kind (smoothing targets)."""
    if not record or "kinds" in record or "figures" not in record:
        return record
    from choose_nlm_blend import RANDOM_TARGETS

    kinds = {k: {"seeds": record.get("seeds"), "targets": list(RANDOM_TARGETS), "figures": f,
                 "cases": [r for r in record.get("cases", []) if r.get("kind") == k]}
             for k, f in record["figures"].items()}
    return {**{f: v for f, v in record.items() if f not in ("seeds", "figures", "cases")}, "kinds": kinds}


def main(argv=None) -> int:
    import choose_nlm_blend

    from CTNormalizeLib.signature.signature import KIND_NAMES

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("package", help="the denoiser package folder whose card gets chain.nlm_residual_choice")
    ap.add_argument("--dry-run", action="store_true", help="print the decision, leave the card alone")
    choose_nlm_blend.add_validation_arguments(ap, FRESH_SEEDS)
    ap.add_argument("--kinds", default=",".join(KIND_NAMES),
                    help="the kinds of pair to decide (comma-separated); the card's decision for the others stays")
    args = ap.parse_args(argv)

    from choose_nlm_blend import _l1, validation_cases
    from denoiser_card import publish_card, read_denoiser

    from CTNormalizeLib.inference.net_denoise import run_chain
    from CTNormalizeLib.plan import make_plan
    from CTNormalizeLib.signature.signature import pair_kind
    from CTNormalizeLib.train.denoiser import CHAIN_SETTINGS

    settings = choose_nlm_blend.validation_settings(args)
    if settings is None:
        return 2
    seeds, targets = settings
    kinds = tuple(k.strip() for k in args.kinds.split(","))
    if not kinds or any(k not in KIND_NAMES for k in kinds):
        print(f"--kinds must name some of {', '.join(KIND_NAMES)}, not {args.kinds!r}.", file=sys.stderr)
        return 2
    pkg = read_denoiser(args.package)
    if pkg is None:
        return 2
    t0 = time.perf_counter()
    closed, gaps, rows = {}, {}, []
    ways = {"card": with_choice(pkg, "card"), "risk": with_choice(pkg, "risk")}
    for meant, s, t, src, tgt, rep in validation_cases("randomized", seeds=seeds, targets=targets):
        plan = make_plan(src, s, t, method="classical", device="cpu", texture="clean")
        kind = pair_kind(plan.source_signature, plan.target_signature)
        if kind not in kinds:
            continue
        outs, picked = {}, None
        for way, p in ways.items():
            res = run_chain(p, src, plan)
            outs[way] = res.volume
            if way == "risk":
                step = next(st for st in res.steps if st["method"] == "denoise")
                picked = (step["parameters"].get("nlm_blend") or {}).get("residual_choice")
        l1, l1_src, l1_rep = _l1(tgt, src, outs, rep)
        if not l1_src > l1_rep:
            print(f"{kind:13s} {s} -> {t}: no gap to close; skipped", flush=True)
            continue
        gaps.setdefault(kind, []).append(l1_src - l1_rep)
        for way in ways:
            closed.setdefault(kind, {}).setdefault(way, []).append(l1_src - l1[way])
        kept = (picked or {}).get("kept_card_because")
        residual = None if picked is None or kept else picked.get("residual")
        rows.append({"kind": kind, "source": s, "target": t, "gap_hu": round(l1_src - l1_rep, 3),
                     "l1_card": round(l1["card"], 3), "l1_risk": round(l1["risk"], 3), "picked_residual": residual,
                     **({"not_picked": kept} if kept else {})})
        print(f"{kind:13s} {s} -> {t}: L1 card {l1['card']:.3f}, risk {l1['risk']:.3f} (residual {residual}), "
              f"source {l1_src:.2f}, replicate {l1_rep:.2f}", flush=True)
    for kind in sorted(set(kinds) - set(closed)):
        print(f"{kind}: no validation case of this kind; its decision is left as it was", file=sys.stderr)
    decided = {}
    for kind in closed:
        choice, figures = decide(closed[kind], gaps[kind])
        decided[kind] = {"choice": choice, "seeds": list(seeds), "targets": list(targets), "figures": figures,
                         "cases": [r for r in rows if r["kind"] == kind]}
        print(f"{kind}: pooled gap closed card {figures['card']}, risk {figures['risk']} "
              f"(se of the difference {figures['difference_se']}) -> {choice}")
    print(json.dumps({k: d["choice"] for k, d in decided.items()}), f"in {time.perf_counter() - t0:.0f} s")
    if not args.dry_run:
        path = Path(args.package) / "card.json"
        card = json.loads(path.read_text(encoding="utf-8"))
        card["chain"] = merged_chain(card.get("chain") or {}, decided, {k: (card.get("chain") or {}).get(k)
                                                                         for k in CHAIN_SETTINGS})
        publish_card(path, card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
