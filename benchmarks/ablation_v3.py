"""Loss ablation of the v3 recipe on a short schedule: which loss terms help on held-out physics?

Every variant trains the v3 network from the same seed on the same cached domain-randomized
bank for the same number of steps, then runs the held-out-physics benchmark (independent
simulator, native size, clean texture, explicit protocol). Variants:

* ``l1``: windowed L1 only;
* ``l1+lung``: plus the lung-window L1 (weight 1);
* ``l1+lung+ei``: plus the soft emphysema-index loss (weight 2): v3's shipped losses;
* ``l1+lung+ei+adv``: plus feature matching (0.1) and the hinge adversarial term (0.01).

Usage::

    .venv/bin/python benchmarks/ablation_v3.py --bank RUN/bank_dr.npz --steps 1200 \\
        [--variants l1,l1+lung] [--out benchmarks/results/ablation_v3.json] [--work /tmp/ablation]

The bank is the one ``ctnormalize train --recipe v3 -o RUN`` caches. A short schedule
ranks the loss terms only as far as they act early in training: the JSON says so, and
the shipped model (14000 steps) is not one of these runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = {
    "l1": {"lung_weight": 0.0, "ei_weight": 0.0},
    "l1+lung": {"lung_weight": 1.0, "ei_weight": 0.0},
    "l1+lung+ei": {"lung_weight": 1.0, "ei_weight": 2.0},
    "l1+lung+ei+adv": {"lung_weight": 1.0, "ei_weight": 2.0, "fm_weight": 0.1, "gan_weight": 0.01},
}


def train_variant(name: str, over: dict, bank, steps: int, work: Path) -> Path:
    from CTNormalizeLib.train.package import write_package
    from CTNormalizeLib.train import recipes
    from CTNormalizeLib.train.loop import train

    tag = name.replace("+", "-")
    cfg = recipes.v3_config(steps=steps, seed=0, name=f"v3-ablation-{tag}", ckpt_every=10 ** 9, **over)
    out = work / tag
    out.mkdir(parents=True, exist_ok=True)
    summary = train(cfg, bank, out, resume=False)
    card = recipes.make_card(cfg, recipes.V3_COVERS, {"kind": "ablation run (same bank as the v3 recipe)"},
                             summary, priority=-100, description=f"v3 loss ablation: {name}",
                             io_extra={"conditioning": "signature", "frontend_lambda": recipes.V3_FRONTEND_LAMBDA})
    card["license"], card["intended_use"] = "Apache-2.0", "Ablation run; research use, not for diagnosis."
    pkg = work / "packages" / cfg.name
    write_package(summary["model"], pkg, card)
    return pkg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bank", required=True, help="bank_dr.npz of a v3 training run")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--size", default="native")
    ap.add_argument("--work", default="/tmp/ctn-ablation")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ablation_v3.json"))
    args = ap.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        print(f"Unknown variant(s) {unknown}; known: {list(VARIANTS)}", file=sys.stderr)
        return 2
    work = Path(args.work)
    os.environ["CTNORMALIZE_MODELS"] = str(work / "packages")
    from CTNormalizeLib.benchmark_methods import method_providers
    from CTNormalizeLib.io.atomic import atomic_write_text
    from CTNormalizeLib.evaluate import heldout_benchmark as hb
    from CTNormalizeLib.train.dr_data import load_dr_bank

    bank = load_dr_bank(Path(args.bank))
    result = {"benchmark": "v3 loss ablation", "steps": args.steps, "bank": str(args.bank),
              "heldout_size": args.size, "texture": "clean", "source": "explicit protocol",
              "caveat": "short schedule; the shipped v3 trained 14000 steps with the l1+lung+ei losses",
              "variants": {}}
    for name in names:
        t0 = time.perf_counter()
        pkg = train_variant(name, VARIANTS[name], bank, args.steps, work)
        train_s = time.perf_counter() - t0
        providers = method_providers([pkg.name], kinds=("model",))
        res = hb.run_heldout(args.size, providers, keep_examples=False)
        label = providers[0].name
        cases = {c["case"]: {k: c["rows"].get(label, {}).get(k) for k in
                             ("gap_closed_body", "gap_closed_lung", "ei_error_pt", "nps_similarity")}
                 for c in res["cases"]}
        result["variants"][name] = {"losses": VARIANTS[name], "train_s": round(train_s, 1), "cases": cases,
                                    "median": res["summary"].get(label, {})}
        print(f"{name:16s} train {train_s:6.0f} s  " + "  ".join(
            f"{c}: gap {v['gap_closed_body']:.3f} EI {v['ei_error_pt']:.3f}" for c, v in cases.items()
            if v["gap_closed_body"] is not None), flush=True)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
