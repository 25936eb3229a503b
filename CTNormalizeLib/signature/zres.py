"""Through-plane resolution from the image: the correlation of noise between neighbouring slices.

A reconstructed slice averages the projections over its slice-sensitivity profile
(SSP). When slices are spaced closer than they are thick, neighbours share data and
their noise is correlated; for a Gaussian SSP of FWHM ``t`` sampled every ``s`` mm the
correlation of neighbouring slices is ``rho = exp(-s^2 / (4 sigma^2))``, ``sigma =
t / 2.3548``, so ``t = 2.3548 s / sqrt(-4 ln rho)``. Where slices do not overlap (``rho``
near 0) the image only says ``t <~ 1.2 s``.
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
    pairs = []
    for z, m in masks.items():
        if z + 1 >= hu.shape[0] or not m.any():
            continue
        a = hu[z].astype(np.float32)
        b = hu[z + 1].astype(np.float32)
        ra = (a - ndi.uniform_filter(a, window))[m]
        rb = (b - ndi.uniform_filter(b, window))[m]
        pairs.append((ra, rb))
    if not pairs or sum(p[0].size for p in pairs) < 2000:
        return ZResolution(None, None, None, 0.0, "too few uniform voxels on neighbouring slices")
    ra = np.concatenate([p[0] for p in pairs])
    rb = np.concatenate([p[1] for p in pairs])
    rho = float(np.corrcoef(ra, rb)[0, 1])
    if not math.isfinite(rho):
        return ZResolution(None, None, None, 0.0, "noise correlation not finite")
    if rho < MIN_RHO:
        return ZResolution(rho, None, 1.2 * s, 0.5,
                           f"neighbouring slices uncorrelated (rho {rho:.2f}): slices do not overlap, "
                           f"thickness <~ {1.2 * s:.3g} mm")
    rho = min(rho, 0.995)
    t = FWHM_PER_SIGMA * s / math.sqrt(-4.0 * math.log(rho))
    return ZResolution(rho, float(t), None, 0.7, f"neighbouring-slice noise correlation {rho:.2f}")
