"""Histogram matching to a reference volume, inside the body or the lungs."""

from __future__ import annotations

import numpy as np

from ..errors import BadInputError
from ..imaging import body_mask
from .masks import lung_mask

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


def run(volume, plan, progress=None, reference=None, options: dict | None = None):
    """The ``histogram_match`` method: the HU histogram in the body (or lungs) matched to a reference volume."""
    from ..volume import Volume
    from .state import finish, partial_warning, start

    if not isinstance(reference, Volume):
        raise BadInputError("Histogram matching needs a reference volume (--reference, or a --target-like scan).")
    region = (options or {}).get("histogram_region", "body")
    state = start(volume, plan)
    m = region_mask(state.hu, state.spacing, region)
    rm = region_mask(reference.hu, reference.spacing, region)
    if progress is not None:
        progress("histogram_match", 0.0)
    state.hu = match_histogram(state.hu, reference.hu, m, rm)
    if progress is not None:
        progress("histogram_match", 1.0)
    state.record("histogram_match", True, {"region": region, "voxels": int(m.sum()), "reference_voxels": int(rm.sum())},
                 f"HU histogram inside the {region} matched to the reference")
    partial_warning(state, plan, "histogram_match", ())
    return finish(volume, state, plan, "histogram_match")
