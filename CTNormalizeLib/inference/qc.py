"""Quality control of a normalized volume (STAN-CT's idea, measured).

- **Seams**: the mean absolute step of the change (output - input) across tile-border
  lines, divided by the same step across interior lines. 1 means tile borders look like
  any other line; a visible seam gives a clearly larger ratio.
- **HU drift**: median HU change in air (outside the body), fat and muscle, regions
  taken from the smoothed input.
- **Large changes**: the fraction of non-lung body voxels whose *smoothed* HU changed by
  more than ``change_hu`` (smoothing removes the noise the model is meant to change).

Figures over their limits become warnings (``QC_SEAMS``, ``QC_HU_DRIFT``, ``QC_LARGE_CHANGE``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

DEFAULT_LIMITS = {"seam_ratio": 1.5, "hu_drift": 20.0, "changed_fraction": 0.05, "change_hu": 50.0}

REGIONS = {"air": (None, -900.0), "fat": (-150.0, -50.0), "muscle": (20.0, 80.0)}


def seam_ratio(change: np.ndarray, borders_y, borders_x, mask=None) -> float | None:
    """Ratio of the mean |step| of ``change [z, y, x]`` across border lines to interior lines.

    ``borders_y`` / ``borders_x`` are indices i where a tile edge lies between rows/cols
    i-1 and i. Returns None when there are no interior borders.
    """
    borders_y = sorted(b for b in set(borders_y) if 0 < b < change.shape[1])
    borders_x = sorted(b for b in set(borders_x) if 0 < b < change.shape[2])
    if not borders_y and not borders_x:
        return None
    dy = np.abs(np.diff(change, axis=1))  # dy[:, i-1] = step between rows i-1 and i
    dx = np.abs(np.diff(change, axis=2))
    my = mx = None
    if mask is not None:
        my = mask[:, 1:, :] & mask[:, :-1, :]
        mx = mask[:, :, 1:] & mask[:, :, :-1]

    def _mean(d, m, sel, axis):
        d = np.take(d, sel, axis=axis)
        if m is None:
            return float(d.mean()) if d.size else np.nan
        m = np.take(m, sel, axis=axis)
        return float(d[m].mean()) if m.any() else np.nan

    def _split(n, borders):
        b = np.array([i - 1 for i in borders], int)
        near = set()
        for i in b:
            near.update(range(max(0, i - 2), min(n, i + 3)))
        interior = np.array([i for i in range(n) if i not in near], int)
        return b, interior

    num, den = [], []
    if borders_y:
        b, inner = _split(dy.shape[1], borders_y)
        num.append(_mean(dy, my, b, 1))
        den.append(_mean(dy, my, inner, 1))
    if borders_x:
        b, inner = _split(dx.shape[2], borders_x)
        num.append(_mean(dx, mx, b, 2))
        den.append(_mean(dx, mx, inner, 2))
    num, den = np.nanmean(num), np.nanmean(den)
    if not np.isfinite(num) or not np.isfinite(den):
        return None
    return float(num / max(den, 1e-6))


def measure_qc(inp: np.ndarray, out: np.ndarray, body: np.ndarray, borders_y=(), borders_x=(),
               limits: dict | None = None, slice_step: int = 1,
               change_reference: np.ndarray | None = None) -> tuple[dict, list[dict]]:
    """QC figures of ``out`` vs ``inp`` (both HU ``[z, y, x]`` on the same grid) and warnings.

    Parameters
    ----------
    inp, out : np.ndarray
        The model's input (on the output grid) and the output.
    body : np.ndarray of bool
        Body mask.
    borders_y, borders_x : sequences of int
        Tile-border positions (see :func:`seam_ratio`).
    limits : dict
        Overrides of :data:`DEFAULT_LIMITS`.
    slice_step : int
        Use every n-th slice (the figures are averages; this bounds QC time on big volumes).
    change_reference : np.ndarray, optional
        What the large-change fraction is measured against (default ``inp``). Learned models
        with a fixed kernel-conversion front-end pass its output, so the expected, physical
        kernel change is not counted as a suspicious change.
    """
    lim = dict(DEFAULT_LIMITS, **(limits or {}))
    sl = slice(None, None, max(1, int(slice_step)))
    inp, out, body = inp[sl], out[sl], body[sl]
    ref = inp if change_reference is None else change_reference[sl]
    change = out - inp
    qc: dict = {"limits": lim, "slices_used": int(inp.shape[0])}
    qc["seam_ratio"] = seam_ratio(change, borders_y, borders_x, body)
    qc["tile_borders"] = {"y": list(map(int, borders_y)), "x": list(map(int, borders_x))}

    sm_in = _smooth(inp, 1.5)
    sm_out = _smooth(out, 1.5)
    drift = {}
    # tissue classes are picked on a strongly smoothed input: picking them on noisy values
    # would select noise tails, whose median a denoised output then "drifts" from (regression to the mean)
    sm_cls = _smooth(inp, 3.0)
    for name, (lo, hi) in REGIONS.items():
        region = ~body if name == "air" else body
        region = region & (sm_cls < hi) & (sm_cls > lo if lo is not None else True)
        if region.sum() >= 200:
            drift[name] = float(np.median(out[region]) - np.median(inp[region]))
        else:
            drift[name] = None
    qc["hu_drift"] = drift
    nonlung = body & (sm_in > -400)
    sm_ref = sm_in if change_reference is None else _smooth(ref, 1.5)
    qc["changed_fraction_reference"] = "input" if change_reference is None else "input after the fixed front-end"
    if nonlung.any():
        qc["changed_fraction"] = float((np.abs(sm_out - sm_ref)[nonlung] > lim["change_hu"]).mean())
    else:
        qc["changed_fraction"] = None

    return qc, qc_warnings(qc, lim)


def _smooth(a: np.ndarray, sigma: float) -> np.ndarray:
    """In-plane Gaussian (the same values as ``ndi.gaussian_filter(a, (0, s, s))``), on z slabs in threads."""
    from .slabs import map_slices

    return map_slices(lambda s: ndi.gaussian_filter(s, (0, sigma, sigma)), a)


def qc_warnings(qc: dict, lim: dict) -> list[dict]:
    """``QC_SEAMS``, ``QC_HU_DRIFT`` and ``QC_LARGE_CHANGE`` warnings for figures over their limits."""
    warnings = []
    if qc["seam_ratio"] is not None and qc["seam_ratio"] > lim["seam_ratio"]:
        warnings.append({"code": "QC_SEAMS", "message":
                         f"Tile seams are measurable: the change steps {qc['seam_ratio']:.2f}x more across tile "
                         f"borders than elsewhere (limit {lim['seam_ratio']})."})
    for name, d in qc["hu_drift"].items():
        if d is not None and abs(d) > lim["hu_drift"]:
            warnings.append({"code": "QC_HU_DRIFT", "message":
                             f"Median HU in {name} moved by {d:+.1f} HU (limit {lim['hu_drift']:g} HU)."})
    cf = qc["changed_fraction"]
    if cf is not None and cf > lim["changed_fraction"]:
        digits = 1 if round(100 * cf, 1) > round(100 * lim["changed_fraction"], 1) else 3  # never "5.0% (limit 5.0%)"
        warnings.append({"code": "QC_LARGE_CHANGE", "message":
                         f"{100 * cf:.{digits}f}% of non-lung body voxels changed by more than {lim['change_hu']:g} HU "
                         "(compared after an in-plane Gaussian smoothing of both, so noise hardly counts; "
                         f"limit {100 * lim['changed_fraction']:.{digits}f}%)."})
    return warnings
