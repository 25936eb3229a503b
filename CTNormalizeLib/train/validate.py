"""Validation on held-out simulated cases (phantom seeds >= 1000) with the benchmark's paired metrics."""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from .. import cancellation
from ..protocols import Protocol, parse_spec, resolve_protocol

log = logging.getLogger(__name__)

VALIDATION_SEEDS = (1500,)  # held out from training, and distinct from the benchmark's 1000-1005
VALIDATION_SOURCES = ("kernel=very-sharp,dose=1,thickness=1", "kernel=standard,dose=0.1,thickness=1",
                      "kernel=smooth,dose=1,thickness=3", "kernel=sharp,dose=0.25,thickness=2")
KEY_METRICS = ("l1_body_hu", "l1_lung_hu", "ei_error_pt", "nps_similarity", "noise_std_error_hu", "ssim_axial")


def _filled(p: Protocol) -> Protocol:
    from dataclasses import replace

    return replace(p, spacing=p.spacing or p.thickness)


def validate_package(package, seeds=VALIDATION_SEEDS, sources=VALIDATION_SOURCES,
                     targets=("emphysema-reference",), shape=(48, 112, 112), spacing=(0.5, 0.7, 0.7),
                     classical: Optional[list] = None) -> dict:
    """Run ``package`` (and optionally classical methods) on held-out phantoms; paired metrics with the floor.

    Returns ``{"runs": [...], "median": {method: {metric: {"source","output","replicate","gap_closed"}}}}``.
    Pairs the package does not cover are skipped.
    """
    from ..evaluate.paired import evaluate_methods
    from ..inference import run_model
    from ..simulate import simulate_pair
    from ..simulate.phantom import make_phantom

    runs = []
    for seed in seeds:
        if seed < 1000:
            raise ValueError("validation seeds must be held out (>= 1000)")
        truth = make_phantom(int(seed), shape, spacing, emphysema=None, nodules=None).volume
        for tname in targets:
            tgt = _filled(resolve_protocol(tname))
            for spec in sources:
                src = _filled(parse_spec(spec))
                if not package.covers(src, tgt):
                    continue
                s_scan, t_scan, rep = simulate_pair(truth, src, tgt, seed=int(seed) * 7 + len(runs))
                outputs = {package.name: run_model(package, s_scan, src, tgt, device="cpu").volume}
                for name in classical or []:
                    from ..normalization import normalize

                    try:
                        outputs[name] = normalize(s_scan, src, tgt, method=name).volume
                    except Exception as exc:  # noqa: BLE001 - a failing method is a result
                        if cancellation.pending_here():  # a Ctrl-C, not the method's failure
                            raise cancellation.as_cancel(exc) from exc
                        log.warning("classical %s failed: %s", name, exc)
                ev = evaluate_methods(t_scan, s_scan, outputs, rep, with_features=False)
                runs.append({"seed": seed, "source": spec, "target": tname,
                             "tables": {m: {k: v for k, v in t.items() if k in KEY_METRICS}
                                        for m, t in ev["tables"].items()}})
    return {"runs": runs, "median": _medians(runs)}


def _medians(runs: list) -> dict:
    out: dict = {}
    for r in runs:
        for m, table in r["tables"].items():
            for metric, row in table.items():
                for role in ("source", "output", "replicate", "gap_closed"):
                    v = row.get(role)
                    if v is not None:
                        out.setdefault(m, {}).setdefault(metric, {}).setdefault(role, []).append(float(v))
    return {m: {k: {role: float(np.median(v)) for role, v in d.items()} for k, d in t.items()}
            for m, t in out.items()}
