"""Resampling a scan onto another protocol's z grid through the slice profile.

The learned models work on the *target* z grid. Thin -> thick is a Gaussian slice
profile (FWHM grows from the source to the target thickness) followed by sampling; thick
-> thin is linear interpolation (the network restores what it can). Grids follow the
project's contract: the first slice stays centred on the source's first slice and slices
follow at the target z spacing (docs/DEVELOPING.md, "z grids").

Own code rather than SimpleITK resampling because we need the profile widening and the
exact first-slice alignment in one cheap pass along z only.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from ..classical.thickness import target_slice_count  # noqa: F401  (the one z-grid rule)

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def resample_z(hu: np.ndarray, src_spacing: float, tgt_spacing: float,
               src_thickness: float | None = None, tgt_thickness: float | None = None) -> np.ndarray:
    """``hu [z, y, x]`` on a grid of ``src_spacing`` -> the grid of ``tgt_spacing`` (float32).

    When ``tgt_thickness > src_thickness`` a Gaussian along z widens the slice profile
    (FWHM^2 adds). Returns the input array itself (not a copy) when nothing changes.
    """
    src_t = src_thickness or src_spacing
    tgt_t = tgt_thickness or tgt_spacing
    out = hu
    if tgt_t > src_t * 1.02:
        sigma = math.sqrt(tgt_t ** 2 - src_t ** 2) * FWHM_TO_SIGMA / src_spacing
        out = ndi.gaussian_filter1d(np.asarray(hu, np.float32), sigma, axis=0, mode="nearest")
    if abs(tgt_spacing - src_spacing) <= 1e-3 * src_spacing:
        return np.asarray(out, np.float32)
    n = target_slice_count(hu.shape[0], src_spacing, tgt_spacing)
    pos = np.arange(n) * (tgt_spacing / src_spacing)
    i0 = np.clip(np.floor(pos).astype(int), 0, hu.shape[0] - 1)
    i1 = np.clip(i0 + 1, 0, hu.shape[0] - 1)
    w = (pos - i0).astype(np.float32)[:, None, None]
    res = np.empty((n,) + hu.shape[1:], np.float32)
    for k in range(n):  # per slice keeps the peak memory at one output volume
        res[k] = out[i0[k]] * (1 - w[k]) + out[i1[k]] * w[k]
    return res
