"""Binary-mask helpers shared by the body and lung masks."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 3D connected component of a boolean mask (empty stays empty)."""
    lab, n = ndi.label(mask)
    if n == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def fill_holes_per_slice(mask: np.ndarray) -> np.ndarray:
    """Fill holes in each axial slice (a 3D fill would need the mask closed along z)."""
    out = np.empty(mask.shape, dtype=bool)
    for z in range(mask.shape[0]):
        out[z] = ndi.binary_fill_holes(mask[z])
    return out


def disk(radius_px: float) -> np.ndarray:
    """A 2D disk structuring element of radius ``radius_px`` (at least 1) pixels."""
    r = max(1, int(round(radius_px)))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (yy * yy + xx * xx) <= r * r + 1e-6


def inplane(struct2d: np.ndarray) -> np.ndarray:
    """A 2D structuring element as a 3D one acting within each axial slice."""
    return struct2d[None, :, :]


def border_labels(lab: np.ndarray) -> np.ndarray:
    """Labels (> 0) of a ``[z, y, x]`` label array that touch the in-plane border."""
    edges = np.concatenate([lab[:, 0, :].ravel(), lab[:, -1, :].ravel(),
                            lab[:, :, 0].ravel(), lab[:, :, -1].ravel()])
    return np.unique(edges[edges > 0])
