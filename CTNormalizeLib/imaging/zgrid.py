"""The z grid rule and resampling along z (slice positions to slice positions).

One rule for every grid a thickness change makes (docs/DEVELOPING.md, "z grids"): the
first output slice is centred on the first input slice and slices follow at the output
spacing while they stay inside the input's extent, ``n_out = floor((n_in - 1) * s_in / s_out) + 1``.

Resampling along z is a linear map from input slices to output slices. Its weights come
from :func:`scipy.interpolate.make_interp_spline` evaluated on the identity (row ``k``
holds the weights of the input slices for output slice ``k``), so the same helper serves
linear interpolation onto any positions (non-uniform input stacks included) and the cubic
spline of the thickness change. The linear weights are applied as a sparse matrix: two
input slices per output slice, one output-sized allocation.
"""

from __future__ import annotations

import numpy as np

from ..volume import Volume


def reflect_index(i: int, n: int) -> int:
    """Slice ``i`` of ``n`` mirrored at the volume's ends (``-1 -> 1``, ``n -> n - 2``); 0 when ``n == 1``."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    i = abs(i) % period
    return i if i < n else period - i


def target_slice_count(n_in: int, s_in: float, s_out: float) -> int:
    """``floor((n_in - 1) * s_in / s_out) + 1`` (with a small tolerance for float error)."""
    return int(np.floor((n_in - 1) * float(s_in) / float(s_out) + 1e-6)) + 1


def grid_positions(n_in: int, s_in: float, s_out: float) -> np.ndarray:
    """Output slice positions (mm from the first input slice) under the z grid rule."""
    return np.arange(target_slice_count(n_in, s_in, s_out)) * float(s_out)


def slice_positions(vol: Volume) -> np.ndarray:
    """Physical position (mm) of each slice centre along the slice-stacking axis.

    Uses the third column of the direction matrix (the direction of array axis 0),
    so it is correct for any axis-aligned or oblique volume whose slices are stacked
    along that column.
    """
    d = np.asarray(vol.direction, dtype=float).reshape(3, 3)
    axis = d[:, 2]
    o = float(np.dot(np.asarray(vol.origin, dtype=float), axis))
    return o + np.arange(vol.shape[0]) * vol.spacing[0]


def fractional_index(z_from, z_to) -> np.ndarray:
    """Position of each ``z_to`` in slice-index units of the increasing positions ``z_from`` (clamped)."""
    z_from = np.asarray(z_from, dtype=float)
    return np.interp(np.asarray(z_to, dtype=float), z_from, np.arange(len(z_from), dtype=float))


def interpolation_weights(z_from, z_to, order: int = 1) -> np.ndarray:
    """``[len(z_to), len(z_from)]`` float64 weights of a spline of ``order`` through the input slices.

    ``z_from`` must increase strictly; ``z_to`` outside its range is clamped to the end
    slices. A single input slice is repeated. ``order`` 1 is linear, 3 the cubic spline
    (which needs at least 4 input slices; fewer fall back to linear).
    """
    from scipy.interpolate import make_interp_spline

    z_from = np.asarray(z_from, dtype=float)
    z_to = np.asarray(z_to, dtype=float)
    n = len(z_from)
    eye = np.eye(n)
    if n == 1:
        return np.ones((len(z_to), 1))
    k = order if n > order else 1
    return make_interp_spline(z_from, eye, k=k, axis=0)(np.clip(z_to, z_from[0], z_from[-1]))


def resample_z(hu: np.ndarray, z_from, z_to) -> np.ndarray:
    """Linear interpolation of ``hu [z, y, x]`` along z from slice positions ``z_from`` to ``z_to`` (float32).

    Positions beyond the input's extent take the end slices (no extrapolation).
    """
    from scipy import sparse

    hu = np.asarray(hu)
    w = sparse.csr_matrix(interpolation_weights(z_from, z_to, order=1).astype(np.float32))
    flat = hu.reshape(hu.shape[0], -1)
    if flat.dtype != np.float32:
        flat = flat.astype(np.float32)
    return np.asarray(w @ flat).reshape((len(z_to),) + hu.shape[1:])
