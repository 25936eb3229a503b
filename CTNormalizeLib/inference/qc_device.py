"""The QC figures of :func:`CTNormalizeLib.inference.qc.measure_qc`, computed on device tensors.

Same definitions, same slice subsample, same limits and warnings; only the figures come
back to the host. The seam ratio (tiles exist only after an out-of-memory retry) is
measured on the host from the subsample.
"""

from __future__ import annotations

import numpy as np

from . import torch_ops
from .qc import DEFAULT_LIMITS, REGIONS, qc_warnings, seam_ratio


def measure_qc_device(inp, out, body, borders_y=(), borders_x=(), limits=None, slice_step: int = 1,
                      change_reference=None) -> tuple[dict, list[dict]]:
    """:func:`~CTNormalizeLib.inference.qc.measure_qc` for torch tensors ``[z, y, x]`` on one device."""
    lim = dict(DEFAULT_LIMITS, **(limits or {}))
    step = max(1, int(slice_step))
    inp, out, body = inp[::step].float(), out[::step].float(), body[::step]
    ref = inp if change_reference is None else change_reference[::step].float()
    qc: dict = {"limits": lim, "slices_used": int(inp.shape[0])}
    qc["seam_ratio"] = None
    if [b for b in borders_y if 0 < b < inp.shape[1]] or [b for b in borders_x if 0 < b < inp.shape[2]]:
        qc["seam_ratio"] = seam_ratio((out - inp).cpu().numpy(), borders_y, borders_x, body.cpu().numpy())
    qc["tile_borders"] = {"y": list(map(int, borders_y)), "x": list(map(int, borders_x))}

    sm_in = torch_ops.gaussian_inplane(inp, 1.5)
    sm_out = torch_ops.gaussian_inplane(out, 1.5)
    sm_cls = torch_ops.gaussian_inplane(inp, 3.0)
    drift = {}
    for name, (lo, hi) in REGIONS.items():
        region = ~body if name == "air" else body
        region = region & (sm_cls < hi)
        if lo is not None:
            region &= sm_cls > lo
        if int(region.sum()) >= 200:
            d = np.float32(torch_ops.median(out[region])) - np.float32(torch_ops.median(inp[region]))
            drift[name] = float(d)
        else:
            drift[name] = None
    qc["hu_drift"] = drift
    nonlung = body & (sm_in > -400)
    sm_ref = sm_in if change_reference is None else torch_ops.gaussian_inplane(ref, 1.5)
    qc["changed_fraction_reference"] = "input" if change_reference is None else "input after the fixed front-end"
    n = int(nonlung.sum())
    if n:
        qc["changed_fraction"] = float(((sm_out - sm_ref).abs() > lim["change_hu"])[nonlung].sum()) / n
    else:
        qc["changed_fraction"] = None
    return qc, qc_warnings(qc, lim)
