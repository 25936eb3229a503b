"""Histogram matching to a reference volume, inside the body or the lungs."""

from __future__ import annotations

import numpy as np

from ..errors import BadInputError
from .masks import body_mask, lung_mask

REGIONS = ("body", "lung")


def region_mask(hu: np.ndarray, spacing, region: str, full: bool = False) -> np.ndarray:
    """Mask of ``region`` (``"body"`` or ``"lung"``) from the HU values (``full``: see :func:`lung_mask`)."""
    if region == "body":
        return body_mask(hu)
    if region == "lung":
        return lung_mask(hu, spacing, full=full)
    raise BadInputError(f"Unknown histogram-matching region {region!r}; use one of {', '.join(REGIONS)}.")


def match_histogram(hu: np.ndarray, reference: np.ndarray, mask: np.ndarray,
                    reference_mask: np.ndarray) -> np.ndarray:
    """Map the HU of the voxels in ``mask`` so their histogram matches ``reference[reference_mask]``.

    Uses :func:`skimage.exposure.match_histograms` on the masked voxels (exact quantile
    matching); voxels outside ``mask`` are unchanged.

    Parameters
    ----------
    hu, reference : np.ndarray
        Source and reference volumes (any shapes; not modified).
    mask, reference_mask : np.ndarray of bool
        Voxels to change / to take the reference histogram from.

    Returns
    -------
    np.ndarray
        float32, the shape of ``hu``.
    """
    from skimage.exposure import match_histograms

    mask = np.asarray(mask, dtype=bool)
    reference_mask = np.asarray(reference_mask, dtype=bool)
    if not mask.any() or not reference_mask.any():
        raise BadInputError("Histogram matching found an empty region in the source or the reference.")
    out = np.array(hu, dtype=np.float32, copy=True)
    out[mask] = match_histograms(out[mask], np.asarray(reference, dtype=np.float32)[reference_mask])
    return out
