"""Small threshold-based body and lung masks used by the classical methods.

The project's full lung segmentation lives in ``CTNormalizeLib.quantify.lung``; when it
is importable :func:`lung_mask` uses it. The fallback here is a plain threshold +
connected-components mask (air inside the body), good enough to pick the voxels whose
statistics the frequency-decomposition and histogram methods measure.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def body_mask(hu: np.ndarray, threshold: float = -500.0) -> np.ndarray:
    """Boolean mask of the body: the largest 3D component above ``threshold`` HU, holes filled per slice.

    Parameters
    ----------
    hu : np.ndarray
        ``[z, y, x]`` HU.
    threshold : float
        HU above which a voxel may be body.
    """
    hu = np.asarray(hu)
    fg = ndi.median_filter(hu, size=(1, 3, 3)) > threshold  # median: noisy low-dose air must not bridge
    lab, n = ndi.label(fg)
    if n == 0:
        return np.zeros(hu.shape, dtype=bool)
    sizes = ndi.sum_labels(fg, lab, index=np.arange(1, n + 1))
    body = lab == (1 + int(np.argmax(sizes)))
    for z in range(body.shape[0]):
        body[z] = ndi.binary_fill_holes(body[z])
    return body


def _fallback_lung_mask(hu: np.ndarray, threshold: float = -400.0) -> np.ndarray:
    body = body_mask(hu)
    smooth = ndi.uniform_filter(np.asarray(hu, dtype=np.float32), size=(1, 3, 3))
    air = (smooth < threshold) & body
    lab, n = ndi.label(air)
    if n == 0:
        return air
    sizes = ndi.sum_labels(air, lab, index=np.arange(1, n + 1))
    # keep components of at least 2 % of the largest: both lungs, not bowel gas specks
    keep = np.flatnonzero(sizes >= 0.02 * sizes.max()) + 1
    lung = np.isin(lab, keep)
    lung = ndi.binary_closing(lung, structure=np.ones((1, 5, 5), bool))
    return lung & body


def lung_mask(hu: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Boolean lung mask: ``quantify.lung.lung_mask`` when available, else a threshold mask.

    Parameters
    ----------
    hu : np.ndarray
        ``[z, y, x]`` HU.
    spacing : tuple of float
        ``(z, y, x)`` mm.
    """
    try:
        from ..quantify.lung import lung_mask as _lm  # written by another module; optional
    except Exception:  # noqa: BLE001 - absent or broken: fall back
        _lm = None
    if _lm is not None:
        try:
            res = _lm(hu, spacing)
            m = np.asarray(getattr(res, "lungs", res), dtype=bool)
            if m.shape == hu.shape and m.any():
                return m
        except Exception:  # noqa: BLE001
            pass
    return _fallback_lung_mask(hu)
