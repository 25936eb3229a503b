"""Choose a learned denoiser's NLM blend weight and flip averaging on validation scans and record them in its card.

Usage (from the repository root)::

    .venv/bin/python scripts/choose_nlm_blend.py Resources/Models/ctn-denoise-v2
    .venv/bin/python scripts/choose_nlm_blend.py Resources/Models/ctn-denoise-v2 --dry-run

The clean texture of a ``role: denoiser`` package can average the network's denoising with
the clean NLM chain's, ``(1 - w) net + w NLM`` (:func:`CTNormalizeLib.classical.denoise.denoise_step`).
Two denoisers that err differently average to a smaller error; how much of each is a
measured choice, made here per kind of pair (kernel change, noise only, as the measured
signatures make them) on **validation scans of the project's own simulator** (phantom seeds
40-43: not in the training bank's 0-39, not among the benchmark's >= 1000). The default
set (``--validation randomized``) takes its sources from domain-randomized scanners (random
filter, dose, electronic noise, tube-current modulation, views), untagged: scans neither
part of the blend was tuned on (the network was trained on noise fields without a projector;
NLM's clean setting was chosen on the engine's kernel classes, which ``--validation classes``
uses, so that set favours NLM). The independent simulator's held-out cases are never used to choose.

The NLM part may leave more noise than the clean chain alone does (``chain.nlm_residual``:
a lighter NLM can complement the network better), so the weight and the residual are chosen
together, per kind. The steps after the noise step are linear in the clean texture (MTF
ratio, slice profile; their settings depend on the noise booked, which is the learned
denoiser's in both), so blending the two chains' outputs (the network's, and the package's
chain with NLM in place of the network inside its region) equals blending inside the noise step, up to the kernel step's spread of the region's
feathered edge; the script checks this inside the body on one case of each kind by running
the package's blended chain.

The network can also be averaged over in-plane flips of its input (``chain.flips``: 1, 2 or 4
views, :data:`CTNormalizeLib.inference.net_denoise.FLIP_VIEWS`), at that many times the
network's time. The blend is chosen for each count; more flips are taken only when they pay:
each doubling must add :data:`FLIP_GAIN` to the best pooled gap closed (a rule fixed before
it was first run). Many blends lie within noise of each other, so a rerun keeps the card's
current blend unless the best is ahead of it by more than one standard error of the difference
(bootstrap over the cases). Writes ``chain.nlm_blend``, ``chain.nlm_residual``, ``chain.flips``
and the validation tables into the card (atomically).
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
sys.path.insert(0, str(ROOT / "scripts"))  # denoiser_card

SEEDS = (40, 41, 42, 43)
PAIRS = {  # kind -> (source, target) protocols of the "classes" validation set
    "kernel_change": [("kernel=sharp,dose=0.25,thickness=2", "kernel=smooth,dose=1,thickness=2"),
                      ("kernel=bone,dose=0.5,thickness=2", "kernel=standard,dose=1,thickness=2")],
    "noise_only": [("kernel=standard,dose=0.1,thickness=2", "kernel=standard,dose=1,thickness=2"),
                   ("kernel=sharp,dose=0.25,thickness=2", "kernel=sharp,dose=1,thickness=2")],
}
#: the "randomized" validation set: per seed and kind, this many sources with randomly drawn scanner physics
RANDOM_PER_KIND = 3
RANDOM_DOSE = (0.04, 0.5)      # source dose (relative to the simulator's full dose)
RANDOM_DOSE_GAIN = (4.0, 12.0)  # noise-only targets: the same scanner at this many times the dose (at most 1)
RANDOM_TARGETS = ("kernel=smooth,dose=1,thickness=2", "kernel=standard,dose=1,thickness=2")
#: kernel-change targets at every kernel class the presets ask for (lung-detail's sharp too: sharpening pairs)
PRESET_KERNEL_TARGETS = RANDOM_TARGETS + ("kernel=sharp,dose=1,thickness=2",)
#: ``--targets``: the randomized set's kernel-change targets by name
TARGET_SETS = {"smoothing": RANDOM_TARGETS, "presets": PRESET_KERNEL_TARGETS}
RANDOM_VIEWS = (0.5, 1.0)      # fraction of the matched number of views
RANDOM_SEED_BASE = 7000        # the physics of phantom seed s are drawn from default_rng(RANDOM_SEED_BASE + s)
#: the validation truth: shape, spacing (mm) and emphysema fraction of each phantom
TRUTH = {"shape": (16, 384, 384), "spacing": (1.0, 0.7, 0.7), "emphysema": 0.05}
#: bumped when what the cache holds changes (the key also holds every setting above and the simulator's versions)
CACHE_FORMAT = 2
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
#: the noise fraction the blend's NLM leaves (the clean chain alone leaves CLEAN_RESIDUAL, 0.15): a lighter NLM
#: may complement the network better than the one that is best on its own
RESIDUALS = (0.15, 0.3, 0.45, 0.6)
VALIDATION_SETS = ("randomized", "classes")
#: test-time flip counts tried (each doubles the network's passes)
FLIPS = (1, 2, 4)
#: what each doubling of the flips must add to the best pooled gap closed to be taken
FLIP_GAIN = 0.005
#: card chain fields another script writes, kept when this one rewrites the chain
KEPT_CHAIN_FIELDS = ("nlm_residual_choice", "residual_choice_validation")
#: bootstrap resamples of the cases for the standard error of a difference in pooled gap closed
BOOTSTRAP = 2000


def _cache_path(which: str, seeds=None, targets=None) -> Path:
    """The cached validation scans; the name changes with their settings, so edits never read stale scans."""
    import hashlib

    from CTNormalizeLib.simulate import SIMULATOR_VERSION
    from CTNormalizeLib.simulate.phantom import PHANTOM_VERSION

    common = [CACHE_FORMAT, which, tuple(SEEDS if seeds is None else seeds), TRUTH, SIMULATOR_VERSION, PHANTOM_VERSION]
    settings = common + ([PAIRS] if which == "classes" else
                         [RANDOM_PER_KIND, RANDOM_DOSE, RANDOM_DOSE_GAIN, tuple(targets or RANDOM_TARGETS), RANDOM_VIEWS,
                          RANDOM_SEED_BASE])
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path.home() / ".cache" / "ctnormalize" / "validation" / f"nlm_blend_cases_{key}.npz"


def _truth(seed: int):
    from CTNormalizeLib.simulate.phantom.make import make_phantom

    return make_phantom(seed, shape=TRUTH["shape"], spacing=TRUTH["spacing"], emphysema=TRUTH["emphysema"]).volume


def _class_scans(arrays: dict, labels: list, seeds=None) -> None:
    """The "classes" set: the engine's kernel classes and doses, tagged as the simulator tags them."""
    from CTNormalizeLib.protocols import parse_spec
    from CTNormalizeLib.simulate.scanner import simulate_scan

    pairs = [(kind, s, t) for kind, ps in PAIRS.items() for s, t in ps]
    for seed in (SEEDS if seeds is None else seeds):
        truth = _truth(seed)
        for i, (kind, s, t) in enumerate(pairs):
            k = f"{seed}_{i}"
            src = simulate_scan(truth, parse_spec(s), seed=seed * 100 + 3 * i)
            arrays[f"{k}_src"], arrays[f"{k}_sp"] = src.hu, np.asarray(src.spacing)
            arrays[f"{k}_tgt"] = simulate_scan(truth, parse_spec(t), seed=seed * 100 + 3 * i + 1).hu
            arrays[f"{k}_rep"] = simulate_scan(truth, parse_spec(t), seed=seed * 100 + 3 * i + 2).hu
            labels.append([k, kind, s, t])


def _random_scans(arrays: dict, labels: list, seeds=None, targets=None) -> None:
    """The "randomized" set: sources from scanners the engine has no class for (domain-randomized filter,
    dose, electronic noise, tube-current modulation, views; :mod:`CTNormalizeLib.simulate.randomized`),
    untagged, so the request names only the target. Kernel changes go to a kernel class at full dose
    (drawn from ``targets``, default :data:`RANDOM_TARGETS`);
    noise-only targets are the same scanner at a higher dose, and the request names only the dose.
    Neither the NLM step (set on the kernel classes) nor the network (trained on noise fields, no
    projector) was tuned on such scans.
    """
    import math
    from dataclasses import replace

    from CTNormalizeLib.protocols import Protocol, parse_spec
    from CTNormalizeLib.simulate import DEFAULT_SCANNER, project_truth
    from CTNormalizeLib.simulate.projector import ParallelGeometry
    from CTNormalizeLib.simulate.randomized import draw_physics
    from CTNormalizeLib.simulate.scanner import simulate_scan

    for seed in (SEEDS if seeds is None else seeds):
        truth = _truth(seed)
        rng = np.random.default_rng(RANDOM_SEED_BASE + seed)
        g = ParallelGeometry(*truth.hu.shape[1:], *truth.spacing[1:])
        det = replace(DEFAULT_SCANNER, views=int(g.n_views * rng.uniform(*RANDOM_VIEWS)) // 2 * 2)
        proj = project_truth(truth, det)
        i = 0
        for kind in ("kernel_change", "noise_only"):
            for _ in range(RANDOM_PER_KIND):
                k = f"{seed}_{i}"
                phys = replace(draw_physics(rng), dose=float(math.exp(rng.uniform(*np.log(RANDOM_DOSE)))))
                w = phys.transfer(float(min(truth.spacing[1:])))
                sv = simulate_scan(truth, Protocol(kernel="standard", dose=phys.dose, thickness=2.0),
                                   int(rng.integers(2 ** 31)), detector=phys.detector(det), projections=proj,
                                   transfer=w)
                arrays[f"{k}_src"], arrays[f"{k}_sp"] = sv.hu, np.asarray(sv.spacing)
                if kind == "kernel_change":
                    t = str(rng.choice(targets or RANDOM_TARGETS))
                    reps = [simulate_scan(truth, parse_spec(t), seed=int(rng.integers(2 ** 31)), detector=det,
                                          projections=proj).hu for _ in range(2)]
                else:
                    dose_t = min(1.0, phys.dose * float(rng.uniform(*RANDOM_DOSE_GAIN)))
                    t = f"dose={dose_t:.3g}"
                    reps = [simulate_scan(truth, Protocol(kernel="standard", dose=dose_t, thickness=2.0),
                                          int(rng.integers(2 ** 31)), detector=phys.detector(det), projections=proj,
                                          transfer=w).hu for _ in range(2)]
                arrays[f"{k}_tgt"], arrays[f"{k}_rep"] = reps
                labels.append([k, kind, "auto", t, json.dumps(phys.to_dict())])
                i += 1


def validation_cases(which: str = "randomized", cache: Path | None = None, seeds=None, targets=None) -> list:
    """``(kind, source spec, target spec, source, target, replicate)`` for every validation case (cached);
    ``seeds``: the phantoms (default :data:`SEEDS`; another set gives fresh scans of the same recipe);
    ``targets``: the randomized set's kernel-change targets (default :data:`RANDOM_TARGETS`)."""
    cache = cache or _cache_path(which, seeds, targets)
    from CTNormalizeLib.io.atomic import atomic_output
    from CTNormalizeLib.volume import Volume

    if cache.is_file():
        with np.load(cache) as z:
            stale = "labels" not in z.files  # written by an older script: make it again
        if stale:
            cache.unlink()
    if not cache.is_file():
        arrays, labels = {}, []
        if which == "classes":
            _class_scans(arrays, labels, seeds)
        else:
            _random_scans(arrays, labels, seeds, targets)
        arrays["labels"] = np.asarray(json.dumps(labels))
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(cache) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
    out = []
    with np.load(cache) as z:
        for k, kind, s, t, *_ in json.loads(str(z["labels"])):
            sp = tuple(float(x) for x in z[f"{k}_sp"])
            # the randomized sources are untagged: a scan from a scanner the engine knows nothing about
            # (its kernel name means nothing to the engine; the thickness is tagged, as almost always)
            meta = {"Modality": "CT", "SliceThickness": f"{sp[0]:g}"} if which == "randomized" else {}
            out.append((kind, s, t, Volume(z[f"{k}_src"], sp, meta=meta), Volume(z[f"{k}_tgt"], sp),
                        Volume(z[f"{k}_rep"], sp)))
    return out


def add_validation_arguments(ap, default_seeds) -> None:
    """``--seeds`` and ``--targets`` of the validation recipe (both decision scripts take them)."""
    ap.add_argument("--seeds", default=",".join(map(str, default_seeds)),
                    help="validation phantom seeds (comma-separated; others give fresh scans of the same recipe)")
    ap.add_argument("--targets", choices=sorted(TARGET_SETS), default="smoothing",
                    help="randomized set's kernel-change targets: smooth and standard (smoothing), or also sharp "
                         "(presets)")


def validation_settings(args):
    """``(seeds, targets)`` from :func:`add_validation_arguments`' options, or None after saying on stderr why not."""
    try:
        seeds = tuple(int(x) for x in args.seeds.split(","))
    except ValueError:
        print(f"--seeds must be whole numbers separated by commas, not {args.seeds!r}.", file=sys.stderr)
        return None
    return seeds, TARGET_SETS[args.targets]


def _described(which: str, counts: dict, seeds=SEEDS, targets=RANDOM_TARGETS) -> str:
    """What the weights were chosen on, for the card."""
    head = (f"validation scans of the project's simulator (phantom seeds {', '.join(map(str, seeds))}, "
            f"{' x '.join(map(str, TRUTH['shape']))} truth at {' x '.join(f'{v:g}' for v in TRUTH['spacing'])} mm, "
            "2 mm slices)")
    n = ", ".join(f"{k}: {c} cases" for k, c in counts.items())
    if which == "classes":
        body = "; ".join(f"{k}: " + ", ".join(f"{a} -> {b}" for a, b in ps) for k, ps in PAIRS.items())
    else:
        body = (f"sources from domain-randomized scanners (random filter, dose {RANDOM_DOSE[0]:g}-{RANDOM_DOSE[1]:g}, "
                "electronic noise, tube-current modulation, 50-100 % of the views), untagged but for the thickness; "
                f"kernel changes to {' or '.join(targets)}, noise-only to the same scanner at "
                f"{RANDOM_DOSE_GAIN[0]:g}-{RANDOM_DOSE_GAIN[1]:g} x the dose; neither denoiser was tuned on such scans")
    return f"{head}: {body}; kinds as the measured signatures make them ({n}); never the independent simulator's held-out cases"


def _with_chain(pkg, weight: float, residual: float, flips: int = 1):
    """``pkg`` with one NLM weight, residual and flip count for every kind of pair."""
    import dataclasses

    chain = {"nlm_blend": weight, "nlm_residual": residual, "flips": flips}
    return dataclasses.replace(pkg, card=dict(pkg.card, chain=chain))


def _key(frw) -> str:
    return f"f{frw[0]}_r{frw[1]:g}_w{frw[2]:g}"


def difference_se(closed_a: list, closed_b: list, gaps: list, n: int = BOOTSTRAP, seed: int = 0) -> float:
    """Bootstrap standard error of ``pooled_gap(closed_a) - pooled_gap(closed_b)`` over the cases (paired)."""
    a, b, g = (np.asarray(v, dtype=np.float64) for v in (closed_a, closed_b, gaps))
    idx = np.random.default_rng(seed).integers(0, len(g), size=(n, len(g)))
    return float(np.std((a[idx].sum(1) - b[idx].sum(1)) / g[idx].sum(1)))


def keep_or_best(best, incumbent, closed: dict, gaps: list) -> tuple:
    """``incumbent`` (the card's blend) unless ``best`` beats it by more than one standard error of the difference.

    Many blends lie within noise of each other (0.7748 vs 0.7745 on 14 cases); taking the top one
    then moves a shipped setting on chance. ``closed``: ``{config: per-case HU closed}``.
    """
    if incumbent is None or incumbent not in closed or incumbent == best:
        return best
    gain = pooled_gap(closed[best], gaps) - pooled_gap(closed[incumbent], gaps)
    return incumbent if gain <= difference_se(closed[best], closed[incumbent], gaps) else best


def _incumbent(card: dict, kind: str):
    """The card's current ``(residual, weight)`` for ``kind`` as the chain runs it, or None without a blend."""
    from CTNormalizeLib.inference.net_denoise import nlm_blend, nlm_residual

    if (card.get("chain") or {}).get("nlm_blend") is None:
        return None  # a package's first choice takes the best
    return nlm_residual(card, kind), nlm_blend(card, kind)


def choose_flips(best_at: dict, gain: float = FLIP_GAIN) -> int:
    """The flip count taken from ``{count: best pooled gap closed}``: start at 1, take each doubling that adds ``gain``."""
    taken = 1
    for f in sorted(best_at):
        if f > taken and best_at[f] - best_at[taken] >= gain * np.log2(f / taken) - 1e-12:
            taken = f
    return taken


def _l1(target, source, outputs: dict, replicate) -> tuple[dict, float, float]:
    """Body L1 against the target of each output, of the source and of the replicate (the floor)."""
    from CTNormalizeLib.evaluate.paired import evaluate_methods

    v = evaluate_methods(target, source, outputs, replicate, with_features=False)["values"]
    return {k: v[k]["l1_body_hu"] for k in outputs}, v["source"]["l1_body_hu"], v["replicate"]["l1_body_hu"]


def pooled_gap(closed: list, gaps: list) -> float:
    """The L1 gap closed over a set of cases: ``sum(L1_source - L1_output) / sum(L1_source - L1_replicate)``.

    The mean of per-case ratios would let a case whose source is hardly noisier than its target
    (a gap of a fraction of a HU) swing the choice; pooled, each case counts by the HU it has to close.
    """
    return float(np.sum(closed) / np.sum(gaps))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("package", help="the denoiser package folder whose card gets chain.nlm_blend and nlm_residual")
    ap.add_argument("--dry-run", action="store_true", help="print the choice, leave the card alone")
    ap.add_argument("--per-case", help="also write every case's gaps and measured noise to this JSON (diagnostics)")
    ap.add_argument("--validation", choices=VALIDATION_SETS, default="randomized",
                    help="randomized: scanners with domain-randomized physics (default; neither denoiser was tuned "
                         "on them); classes: the engine's kernel classes")
    add_validation_arguments(ap, SEEDS)
    args = ap.parse_args(argv)
    settings = validation_settings(args)
    if settings is None:
        return 2
    seeds, targets = settings

    import dataclasses

    from scipy import ndimage as ndi

    from CTNormalizeLib.classical import chain
    from CTNormalizeLib.classical.denoise import CLEAN_RESIDUAL
    from CTNormalizeLib.evaluate.agreement import gap_closed
    from CTNormalizeLib.inference.net_denoise import run_chain, stack_denoiser
    from CTNormalizeLib.io.atomic import atomic_write_text
    from CTNormalizeLib.plan import make_plan
    from CTNormalizeLib.signature.signature import pair_kind
    from CTNormalizeLib.train.denoiser import CHAIN_SETTINGS

    from denoiser_card import publish_card, read_denoiser

    pkg = read_denoiser(args.package)
    if pkg is None:
        return 2
    t0 = time.perf_counter()
    grid = [(f, r, w) for f in FLIPS for r in RESIDUALS for w in WEIGHTS]
    table = {kind: {rw: [] for rw in grid} for kind in PAIRS}  # L1 closed (HU) per case
    floors = {kind: [] for kind in PAIRS}  # the gap per case (HU): source L1 - replicate L1
    ratios = {kind: {rw: [] for rw in grid} for kind in PAIRS}  # per-case gap closed (recorded, not chosen on)
    checks = {}  # one case per kind: the blended chain is checked on each
    per_case = []
    for meant, s, t, src, tgt, rep in validation_cases(args.validation, seeds=seeds, targets=targets):
        plan = make_plan(src, s, t, method="classical", device="cpu", texture="clean")
        # the chain picks the weight by the kind its plan sees (measured signatures), so the table does too
        kind = pair_kind(plan.source_signature, plan.target_signature)
        if kind != meant:
            print(f"({s} -> {t} was simulated as {meant}; the measured signatures make it {kind})", flush=True)
        nets = {}
        for f in FLIPS:
            den = stack_denoiser(pkg, plan.source_signature.transfer, float(src.spacing[1]), flips=f)
            nets[f] = chain.run(src, plan, options={"denoise_method": den, "label": pkg.name}).volume
        net = nets[1]
        # the blend acts inside the network's region (the body; the air it keeps stays as it was)
        m = den.region(src.hu) if net.hu.shape == src.hu.shape else np.ones_like(net.hu)
        blends = {}
        for r in RESIDUALS:
            # the package's chain with all-NLM inside the region: NLM as the blend runs it (the steps after
            # the noise step see the noise the learned denoiser books, whatever NLM leaves)
            full = run_chain(_with_chain(pkg, 1.0, r), src, plan).volume
            for f, nf in nets.items():
                for w in WEIGHTS:
                    blends[(f, r, w)] = dataclasses.replace(nf, hu=(nf.hu + w * (full.hu - nf.hu)).astype(np.float32))
        l1, l1_src, l1_rep = _l1(tgt, src, {_key(rw): v for rw, v in blends.items()}, rep)
        gaps = {k: gap_closed(l1_src, v, l1_rep) for k, v in l1.items()}
        if not l1_src > l1_rep or any(g is None for g in gaps.values()):  # source at the floor: says nothing
            print(f"{kind:13s} {s} -> {t}: no gap to close; skipped", flush=True)
            continue
        floors[kind].append(l1_src - l1_rep)
        for rw in grid:
            table[kind][rw].append(l1_src - l1[_key(rw)])
            ratios[kind][rw].append(gaps[_key(rw)])
        per_case.append({"kind": kind, "simulated_as": meant, "source": s, "target": t,
                         "source_noise_hu": plan.source_signature.noise_hu,
                         "target_noise_hu": plan.target_signature.noise_hu,
                         "source_mtf50": plan.source_signature.transfer.mtf50, "gap_hu": l1_src - l1_rep,
                         "gaps": gaps})
        best = max(grid, key=lambda frw: gaps[_key(frw)])
        print(f"{kind:13s} {s} -> {t}: network {gaps[_key((1, RESIDUALS[0], 0.0))]:.3f}, best {gaps[_key(best)]:.3f} "
              f"(flips {best[0]}, residual {best[1]:g}, weight {best[2]:g})", flush=True)
        checks.setdefault(kind, (src, s, t, blends, m))
    empty = [kind for kind, ws in table.items() if not ws[grid[0]]]
    if empty:
        print(f"No usable validation case for {', '.join(empty)}; nothing recorded.", file=sys.stderr)
        return 1
    pooled = {kind: {frw: pooled_gap(v, floors[kind]) for frw, v in ws.items()} for kind, ws in table.items()}
    mean = {kind: {frw: float(np.mean(v)) for frw, v in ws.items()} for kind, ws in ratios.items()}
    # per flip count, the best blend (ties go to the smaller NLM weight, then to the clean chain's residual),
    # or the card's current blend where the best is not ahead of it by more than a standard error
    top = {kind: {f: max((frw for frw in grid if frw[0] == f),
                         key=lambda frw: (round(m[frw], 4), -frw[2], -abs(frw[1] - CLEAN_RESIDUAL)))
                  for f in FLIPS} for kind, m in pooled.items()}
    inc = {kind: _incumbent(pkg.card, kind) for kind in top}
    best_at = {kind: {f: keep_or_best(b, None if inc[kind] is None else (f, *inc[kind]), table[kind], floors[kind])
                      for f, b in per.items()} for kind, per in top.items()}
    # the flip count by the best blend at each count (the rule as written); then the blend kept or taken there
    flips = {kind: choose_flips({f: pooled[kind][frw] for f, frw in b.items()}) for kind, b in top.items()}
    best = {kind: best_at[kind][flips[kind]] for kind in best_at}
    chosen = {kind: frw[2] for kind, frw in best.items()}
    residual = {kind: frw[1] for kind, frw in best.items()}

    # the blended chain (inside the noise step) gives what the blended outputs gave, for each kind; a weight
    # of 0 would compare the network with itself, so the check uses the largest weight when one is 0
    checked = {k: (flips[k], residual[k], chosen[k] or WEIGHTS[-1]) for k in chosen}
    diff = 0.0
    for kind, (src, s, t, blends, m) in checks.items():
        plan = make_plan(src, s, t, method="classical", device="cpu", texture="clean")  # the package needs no install
        f, r, w = checked[kind]
        got = run_chain(_with_chain(pkg, w, r, f), src, plan).volume
        # inside the body (a kernel step after the blend spreads the mask's feathered edge a little)
        inner = ndi.binary_erosion(m >= 1.0, np.ones((1, 9, 9), bool)) if m.ndim == 3 else np.ones(m.shape, bool)
        diff = max(diff, float(np.abs(got.hu - blends[checked[kind]].hu)[inner].max()))
    if diff > 0.05:
        print(f"The blended chain differs from the blended outputs by {diff:.3f} HU; not recorded.", file=sys.stderr)
        return 1

    record = {
        "nlm_blend": chosen,
        "nlm_residual": residual,
        "flips": flips,
        "flips_rule": f"network averaged over 1, 2 or 4 in-plane flips of its input; more flips taken only where each "
                      f"doubling adds >= {FLIP_GAIN:g} to the best pooled gap closed (it doubles the network's time)",
        "blend_rule": "per kind and flip count the blend with the best pooled gap closed, unless the card's previous "
                      "blend is within one standard error of it (bootstrap over the cases, "
                      f"{BOOTSTRAP} resamples): a rerun does not move a setting on noise",
        "previous_blend": {kind: None if v is None else {"residual": v[0], "weight": v[1]} for kind, v in inc.items()},
        "validation_flips": {kind: {str(f): {"chosen": round(pooled[kind][frw], 4), "residual": frw[1],
                                             "weight": frw[2], "best": round(pooled[kind][top[kind][f]], 4),
                                             "best_residual": top[kind][f][1], "best_weight": top[kind][f][2]}
                                    for f, frw in b.items()} for kind, b in best_at.items()},
        "chosen_on": _described(args.validation, {k: len(v[grid[0]]) for k, v in table.items()}, seeds, targets),
        "validation_set": args.validation,
        "metric": "pooled L1 gap closed in the body: sum over the cases of (L1 source - L1 output) / sum of "
                  "(L1 source - L1 replicate) (each case counts by the HU it has to close)",
        # the table each kind's weights were chosen from: at its flip count
        "validation": {kind: {f"residual {r:g}": {f"{w:g}": round(ms[(flips[kind], r, w)], 4) for w in WEIGHTS}
                              for r in RESIDUALS} for kind, ms in pooled.items()},
        "validation_mean_of_ratios": {kind: {f"residual {r:g}": {f"{w:g}": round(ms[(flips[kind], r, w)], 4)
                                                                 for w in WEIGHTS} for r in RESIDUALS}
                                      for kind, ms in mean.items()},
        "gap_hu": {kind: [round(g, 2) for g in v] for kind, v in floors.items()},
        "check_max_abs_diff_hu": round(diff, 5),
        "script": "scripts/choose_nlm_blend.py",
    }
    print(json.dumps(record, indent=1))
    if args.per_case:
        atomic_write_text(Path(args.per_case), json.dumps(per_case, indent=1, default=float))
    print(f"chosen weights {chosen}, residuals {residual}, flips {flips} in {time.perf_counter() - t0:.0f} s")
    if not args.dry_run:
        path = Path(args.package) / "card.json"
        card = json.loads(path.read_text(encoding="utf-8"))
        # what scripts/choose_residual_by_risk.py decided stays only with the blend it was measured with
        old = card.get("chain") or {}
        kept = {k: v for k, v in old.items() if k in KEPT_CHAIN_FIELDS}
        if kept and any(old.get(k) != record[k] for k in CHAIN_SETTINGS):
            print("The blend changed: the per-scan residual decision is dropped (rerun "
                  "scripts/choose_residual_by_risk.py).")
            kept = {}
        card["chain"] = {**kept, **record}
        note = "; its clean texture averages the network with calibrated NLM (chain.nlm_blend)"
        flip_note = "; its clean texture averages the network over flips of its input (chain.flips)"
        base = card.get("description", "").split(note)[0].split(flip_note)[0]
        card["description"] = base + (note if any(chosen.values()) else "") + (
            flip_note if any(f > 1 for f in flips.values()) else "")
        publish_card(path, card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
