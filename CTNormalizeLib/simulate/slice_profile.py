"""Slice-sensitivity profiles along z, and the z grid of a simulated scan.

A reconstructed slice of nominal thickness ``T`` is a weighted sum of the fine detector
rows (the truth's slices). Each fine row has a box profile as wide as its own native
thickness; we convolve it with a Gaussian so that the total profile has a FWHM of about
``T`` (``FWHM_gauss = sqrt(T^2 - native^2)``). The weights are the Gaussian integrated
over each row's extent, so a profile thinner than a row degrades gracefully to
nearest-row sampling.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

from ..imaging.zgrid import grid_positions

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def output_positions(n_fine: int, fine_spacing: float, out_spacing: float) -> np.ndarray:
    """z positions (mm from the first fine slice) of the output slices.

    The first output slice is centred on the first fine slice; slices follow every
    ``out_spacing`` mm as long as they stay inside the fine grid's extent (the engine's one
    z grid rule, :func:`CTNormalizeLib.imaging.zgrid.grid_positions`).
    """
    return grid_positions(n_fine, fine_spacing, out_spacing)


def ssp_weights(n_fine: int, fine_spacing: float, native_thickness: float, thickness: float,
                positions: np.ndarray) -> np.ndarray:
    """Row weights ``[n_out, n_fine]`` of the slice profiles centred at ``positions``.

    Parameters
    ----------
    n_fine, fine_spacing : int, float
        The fine grid: row ``k`` is centred at ``k * fine_spacing`` mm.
    native_thickness : float
        Width of a fine row's own (box) profile, mm.
    thickness : float
        Nominal FWHM of the output profile, mm (>= ``native_thickness``).
    positions : np.ndarray
        Output slice centres, mm.

    Returns
    -------
    np.ndarray
        float64 weights; each row sums to 1 (profiles cut by the volume's ends are
        renormalised).
    """
    z = np.arange(n_fine) * fine_spacing
    half = 0.5 * fine_spacing
    g = np.sqrt(max(thickness**2 - native_thickness**2, 0.0)) * FWHM_TO_SIGMA
    d = z[None, :] - np.asarray(positions, dtype=np.float64)[:, None]
    if g < 1e-6 * fine_spacing:
        w = ((d >= -half) & (d < half)).astype(np.float64)
    else:
        s = np.sqrt(2.0) * g
        w = 0.5 * (erf((d + half) / s) - erf((d - half) / s))
    w[w < 1e-6 * w.max(axis=1, keepdims=True)] = 0.0
    w /= w.sum(axis=1, keepdims=True)
    return w
