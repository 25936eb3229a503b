"""Choose a learned denoiser's NLM blend weight on validation scans and record it in its card.

Usage (from the repository root)::

    .venv/bin/python scripts/choose_nlm_blend.py Resources/Models/ctn-denoise-v2
    .venv/bin/python scripts/choose_nlm_blend.py Resources/Models/ctn-denoise-v2 --dry-run

The clean texture of a ``role: denoiser`` package can average the network's denoising with
the clean NLM chain's, ``(1 - w) net + w NLM`` (:func:`CTNormalizeLib.classical.denoise.denoise_step`).
Two denoisers that err differently average to a smaller error; how much of each is a
measured choice, made here per kind of pair (kernel change, noise only) on **validation
scans of the project's own simulator** (phantom seeds 40-43: not in the training bank's
0-39, not among the benchmark's >= 1000; the denoiser never saw this simulator's noise).
The independent simulator's held-out cases are never used to choose.

The steps after the noise step are linear in the clean texture (MTF ratio, slice profile)
and both chains book the same residual noise, so blending the two chains' outputs (inside the
network's region, the body) equals blending inside the noise step, up to the kernel step's
spread of the region's feathered edge; the script checks this inside the body on one case of
each kind by running the package's blended chain. Writes ``chain.nlm_blend`` and the validation table into the card (atomically).
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

SEEDS = (40, 41, 42, 43)
PAIRS = {  # kind -> (source, target) protocols
    "kernel_change": [("kernel=sharp,dose=0.25,thickness=2", "kernel=smooth,dose=1,thickness=2"),
                      ("kernel=bone,dose=0.5,thickness=2", "kernel=standard,dose=1,thickness=2")],
    "noise_only": [("kernel=standard,dose=0.1,thickness=2", "kernel=standard,dose=1,thickness=2"),
                   ("kernel=sharp,dose=0.25,thickness=2", "kernel=sharp,dose=1,thickness=2")],
}
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def _cache_path() -> Path:
    """The cached validation scans; the name changes with the seeds and pairs, so edits never read stale scans."""
    import hashlib

    key = hashlib.sha256(json.dumps([SEEDS, PAIRS], sort_keys=True).encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "ctnormalize" / "validation" / f"nlm_blend_cases_{key}.npz"


def validation_cases(cache: Path | None = None) -> list:
    """``(kind, source spec, target spec, source, target, replicate)`` for every seed and pair (cached)."""
    cache = cache or _cache_path()
    from CTNormalizeLib.io.atomic import atomic_output
    from CTNormalizeLib.protocols import parse_spec
    from CTNormalizeLib.simulate.phantom.make import make_phantom
    from CTNormalizeLib.simulate.scanner import simulate_scan
    from CTNormalizeLib.volume import Volume

    pairs = [(kind, s, t) for kind, ps in PAIRS.items() for s, t in ps]
    if not cache.is_file():
        arrays = {}
        for seed in SEEDS:
            truth = make_phantom(seed, shape=(16, 384, 384), spacing=(1.0, 0.7, 0.7), emphysema=0.05).volume
            for i, (_, s, t) in enumerate(pairs):
                k = f"{seed}_{i}"
                src = simulate_scan(truth, parse_spec(s), seed=seed * 100 + 3 * i)
                arrays[f"{k}_src"], arrays[f"{k}_sp"] = src.hu, np.asarray(src.spacing)
                arrays[f"{k}_tgt"] = simulate_scan(truth, parse_spec(t), seed=seed * 100 + 3 * i + 1).hu
                arrays[f"{k}_rep"] = simulate_scan(truth, parse_spec(t), seed=seed * 100 + 3 * i + 2).hu
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(cache) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
    out = []
    with np.load(cache) as z:
        for seed in SEEDS:
            for i, (kind, s, t) in enumerate(pairs):
                k = f"{seed}_{i}"
                sp = tuple(float(x) for x in z[f"{k}_sp"])
                out.append((kind, s, t, Volume(z[f"{k}_src"], sp), Volume(z[f"{k}_tgt"], sp),
                            Volume(z[f"{k}_rep"], sp)))
    return out


def _gap(target, source, outputs: dict, replicate) -> dict:
    from CTNormalizeLib.evaluate.agreement import gap_closed
    from CTNormalizeLib.evaluate.paired import evaluate_methods

    v = evaluate_methods(target, source, outputs, replicate, with_features=False)["values"]
    return {k: gap_closed(v["source"]["l1_body_hu"], v[k]["l1_body_hu"], v["replicate"]["l1_body_hu"])
            for k in outputs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("package", help="the denoiser package folder whose card gets chain.nlm_blend")
    ap.add_argument("--dry-run", action="store_true", help="print the choice, leave the card alone")
    args = ap.parse_args(argv)

    import dataclasses

    from scipy import ndimage as ndi

    from CTNormalizeLib.classical import chain
    from CTNormalizeLib.inference.net_denoise import run_chain, stack_denoiser
    from CTNormalizeLib.io.atomic import atomic_write_text
    from CTNormalizeLib.models.registry import read_package
    from CTNormalizeLib.plan import make_plan

    from CTNormalizeLib.errors import BadInputError

    try:
        pkg = read_package(Path(args.package))
    except (BadInputError, OSError, ValueError) as exc:
        print(f"Cannot read the package {args.package}: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    if pkg.card.get("role") != "denoiser":
        print(f"{args.package} is not a denoiser package (card role).", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    table = {kind: {w: [] for w in WEIGHTS} for kind in PAIRS}
    checks = {}  # one case per kind: the blended chain is checked on each
    for kind, s, t, src, tgt, rep in validation_cases():
        plan = make_plan(src, s, t, method="classical", device="cpu", texture="clean")
        den = stack_denoiser(pkg, plan.source_signature.transfer, float(src.spacing[1]))
        net = chain.run(src, plan, options={"denoise_method": den, "label": pkg.name}).volume
        nlm = chain.run(src, plan).volume
        # the blend acts inside the network's region (the body; the air it keeps stays as it was)
        m = den.region(src.hu) if net.hu.shape == src.hu.shape else np.ones_like(net.hu)
        blends = {w: dataclasses.replace(net, hu=(net.hu + w * m * (nlm.hu - net.hu)).astype(np.float32))
                  for w in WEIGHTS}
        gaps = _gap(tgt, src, {str(w): v for w, v in blends.items()}, rep)
        if any(gaps[str(w)] is None for w in WEIGHTS):  # source already at the floor: says nothing
            print(f"{kind:13s} {s} -> {t}: no gap to close; skipped", flush=True)
            continue
        for w in WEIGHTS:
            table[kind][w].append(gaps[str(w)])
        print(f"{kind:13s} {s} -> {t}: " + " ".join(f"{w:g}:{gaps[str(w)]:.3f}" for w in WEIGHTS), flush=True)
        checks.setdefault(kind, (src, s, t, blends, m))
    empty = [kind for kind, ws in table.items() if not ws[WEIGHTS[0]]]
    if empty:
        print(f"No usable validation case for {', '.join(empty)}; nothing recorded.", file=sys.stderr)
        return 1
    mean = {kind: {w: float(np.mean(v)) for w, v in ws.items()} for kind, ws in table.items()}
    chosen = {kind: max(WEIGHTS, key=lambda w: (round(m[w], 4), -w)) for kind, m in mean.items()}

    # the blended chain (inside the noise step) gives what the blended outputs gave, for each kind; a weight
    # of 0 would compare the network with itself, so the check uses the largest weight when one is 0
    card = dict(pkg.card, chain={"nlm_blend": {k: chosen[k] or WEIGHTS[-1] for k in chosen}})
    diff = 0.0
    for kind, (src, s, t, blends, m) in checks.items():
        plan = make_plan(src, s, t, method="classical", device="cpu", texture="clean")  # the package needs no install
        got = run_chain(dataclasses.replace(pkg, card=card), src, plan).volume
        # inside the body (a kernel step after the blend spreads the mask's feathered edge a little)
        inner = ndi.binary_erosion(m >= 1.0, np.ones((1, 9, 9), bool)) if m.ndim == 3 else np.ones(m.shape, bool)
        diff = max(diff, float(np.abs(got.hu - blends[chosen[kind] or WEIGHTS[-1]].hu)[inner].max()))
    if diff > 0.05:
        print(f"The blended chain differs from the blended outputs by {diff:.3f} HU; not recorded.", file=sys.stderr)
        return 1

    record = {
        "nlm_blend": chosen,
        "chosen_on": (f"validation scans of the project's simulator (phantom seeds {SEEDS[0]}-{SEEDS[-1]}, "
                      "16 x 384 x 384 truth at 1 x 0.7 x 0.7 mm, 2 mm slices), per kind of pair: "
                      + "; ".join(f"{k}: " + ", ".join(f"{a} -> {b}" for a, b in ps) for k, ps in PAIRS.items())
                      + "; never the independent simulator's held-out cases"),
        "metric": "mean L1 gap closed in the body (replicate floor)",
        "validation": {kind: {f"{w:g}": round(m, 4) for w, m in ms.items()} for kind, ms in mean.items()},
        "check_max_abs_diff_hu": round(diff, 5),
        "script": "scripts/choose_nlm_blend.py",
    }
    print(json.dumps(record, indent=1))
    print(f"chosen {chosen} in {time.perf_counter() - t0:.0f} s")
    if not args.dry_run:
        path = Path(args.package) / "card.json"
        card = json.loads(path.read_text(encoding="utf-8"))
        card["chain"] = record
        note = "; its clean texture averages the network with calibrated NLM (chain.nlm_blend)"
        card["description"] = card.get("description", "").split(note)[0] + (note if any(chosen.values()) else "")
        atomic_write_text(path, json.dumps(card, indent=2) + "\n")
        print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
