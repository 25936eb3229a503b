"""Resampling a scan onto another protocol's z grid through the slice profile.

The learned models work on the *target* z grid. Thin -> thick is a Gaussian slice
profile (FWHM grows from the source to the target thickness) followed by sampling; thick
-> thin is linear interpolation (the network restores what it can). Grids follow the
project's contract: the first slice stays centred on the source's first slice and slices
follow at the target z spacing (docs/DEVELOPING.md, "z grids").

The widening is a Gaussian along z (scipy); the sampling is the shared linear z resampler
:func:`CTNormalizeLib.imaging.zgrid.resample_z` on the grid of
:func:`~CTNormalizeLib.imaging.zgrid.target_slice_count`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from ..imaging.zgrid import grid_positions
from ..imaging.zgrid import resample_z as resample_z_linear

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
    z_in = np.arange(hu.shape[0]) * float(src_spacing)
    return resample_z_linear(out, z_in, grid_positions(hu.shape[0], src_spacing, tgt_spacing))
