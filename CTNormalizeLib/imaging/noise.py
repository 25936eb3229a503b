"""Robust noise standard deviation: the normal-consistent median absolute deviation."""

from __future__ import annotations

import numpy as np
from scipy.stats import median_abs_deviation


def robust_sigma(values, center: float | None = None) -> float:
    """Standard deviation of ``values`` estimated from their MAD (``1.4826 * MAD`` for normal data).

    Parameters
    ----------
    values : array-like
        Samples (any shape; flattened).
    center : float, optional
        Deviations are taken from this value instead of the median (e.g. 0 for differences
        of neighbouring voxels, whose expected value is known).

    Returns
    -------
    float
    """
    values = np.asarray(values)
    about = None if center is None else (lambda x, axis: np.full(np.shape(np.median(x, axis=axis)), center))
    return float(median_abs_deviation(values, axis=None, center=about, scale="normal"))
