"""Through-plane resolution from the image: the correlation of noise between neighbouring slices.

A reconstructed slice averages the projections over its slice-sensitivity profile
(SSP). When slices are spaced closer than they are thick, neighbours share data and
their noise is correlated; for a Gaussian SSP of FWHM ``t`` sampled every ``s`` mm the
correlation of neighbouring slices is ``rho = exp(-s^2 / (4 sigma^2))``, ``sigma =
t / 2.3548``, so ``t = 2.3548 s / sqrt(-4 ln rho)``. Where slices do not overlap (``rho``
near 0) the image only says ``t <~ 1.2 s``.

Structure in the air (streaks from the shoulders, a blanket, the table) is also shared by
neighbouring slices, and on real chest scans it varies along z (lung1's slice pairs read
0.0-0.67 at 5 mm spacing). Overlap decays fast with distance (two slices apart the
correlation is ``rho^4``), such structure slowly; with ``c`` the part both distances
share, ``r1 = rho + c`` and ``r2 = rho^4 + c``, so ``rho`` solves ``rho - rho^4 = r1 - r2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import ndimage as ndi

FWHM_PER_SIGMA = 2.3548
MIN_RHO = 0.08


@dataclass
class ZResolution:
    """Noise correlation of neighbouring slices and the SSP FWHM it implies (None if not measurable)."""

    rho: Optional[float]
    thickness_mm: Optional[float]
    upper_bound_mm: Optional[float]
    confidence: float
    detail: str


def z_resolution(hu: np.ndarray, spacing, masks: dict, window: int = 5) -> ZResolution:
    """Estimate the slice-profile FWHM from the correlation of high-pass noise between slices.

    Parameters
    ----------
    hu : np.ndarray
        ``[z, y, x]`` HU.
    spacing : sequence of float
        ``(z, y, x)`` mm.
    masks : dict
        ``{z: boolean mask}`` of uniform voxels (air outside the body) on slices ``z``
        whose next slice ``z + 1`` exists.
    window : int
        Local-mean window (pixels) of the high-pass residual.
    """
    s = float(spacing[0])

    def residual(z, m):
        x = hu[z].astype(np.float32)
        return (x - ndi.uniform_filter(x, window))[m]

    pairs, pairs2 = [], []
    for z, m in masks.items():
        if z + 1 >= hu.shape[0] or not m.any():
            continue
        ra = residual(z, m)
        pairs.append((ra, residual(z + 1, m)))
        if z + 2 < hu.shape[0]:
            pairs2.append((ra, residual(z + 2, m)))
    if not pairs or sum(p[0].size for p in pairs) < 2000:
        return ZResolution(None, None, None, 0.0, "too few uniform voxels on neighbouring slices")
    r1 = _pooled_correlation(pairs)
    if not math.isfinite(r1):
        return ZResolution(None, None, None, 0.0, "noise correlation not finite")
    r2 = _pooled_correlation(pairs2) if sum(p[0].size for p in pairs2) >= 2000 else float("nan")
    rho = _overlap_part(r1, r2)
    if rho < r1 - 0.02:
        structure = (f", after removing structure shared along z (read {r1:.2f} next door, {r2:.2f} two slices "
                     "apart)")
    else:
        structure = ""
    if rho < MIN_RHO:
        return ZResolution(rho, None, 1.2 * s, 0.5,
                           f"neighbouring slices uncorrelated (rho {rho:.2f}{structure}): slices do not overlap, "
                           f"thickness <~ {1.2 * s:.3g} mm")
    rho = min(rho, 0.995)
    t = FWHM_PER_SIGMA * s / math.sqrt(-4.0 * math.log(rho))
    return ZResolution(rho, float(t), None, 0.7, f"neighbouring-slice noise correlation {rho:.2f}{structure}")


def _pooled_correlation(pairs) -> float:
    if not pairs:
        return float("nan")
    a = np.concatenate([p[0] for p in pairs])
    b = np.concatenate([p[1] for p in pairs])
    return float(np.corrcoef(a, b)[0, 1])


#: two slices apart, a correlation this far above ``r1^4`` is read as structure (below it: the estimate's scatter)
SHARED_STRUCTURE_MIN = 0.05


def _overlap_part(r1: float, r2: float) -> float:
    """The slice-overlap part of the neighbouring-slice correlation ``r1``, given ``r2`` two slices apart.

    ``r1`` itself where ``r2`` is unknown or close to the pure overlap's ``r1^4``
    (:data:`SHARED_STRUCTURE_MIN`); else the root of ``x - x^4 = r1 - r2`` below ``r1``: with
    ``r2 > r1^4``, ``x - x^4 - (r1 - r2)`` is positive at ``r1``, so that root is the smaller
    of the two and lies under the curve's peak.
    """
    from scipy.optimize import brentq

    if not math.isfinite(r2) or r1 <= 0 or r2 <= r1 ** 4 + SHARED_STRUCTURE_MIN:
        return r1
    d = r1 - r2
    if d <= 0:  # as much correlation two slices apart as next door: all structure, no overlap read
        return 0.0
    return float(brentq(lambda x: x - x ** 4 - d, 0.0, min(r1, 4.0 ** (-1.0 / 3.0))))
