"""Small threshold-based body and lung masks used by the classical methods.

The project's full lung segmentation lives in ``CTNormalizeLib.quantify.lung``; when it
is importable :func:`lung_mask` uses it. The fallback here is a plain threshold +
connected-components mask (air inside the body), good enough to pick the voxels whose
statistics the frequency-decomposition and histogram methods measure.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..quantify.body import body_mask  # noqa: F401  (re-exported for the classical methods)


def _fallback_lung_mask(hu: np.ndarray, threshold: float = -400.0) -> np.ndarray:
    body = body_mask(hu)
    smooth = ndi.uniform_filter(np.asarray(hu, dtype=np.float32), size=(1, 3, 3))
    air = (smooth < threshold) & body
    lab, n = ndi.label(air)
    if n == 0:
        return air
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    # keep components of at least 2 % of the largest: both lungs, not bowel gas specks
    keep = np.flatnonzero(sizes >= 0.02 * sizes.max())
    lut = np.zeros(n + 1, bool)
    lut[keep] = True
    lung = ndi.binary_closing(lut[lab], structure=np.ones((1, 5, 5), bool))
    return lung & body


def lung_mask(hu: np.ndarray, spacing=(1.0, 1.0, 1.0), full: bool = False) -> np.ndarray:
    """Boolean lung mask.

    Parameters
    ----------
    hu : np.ndarray
        ``[z, y, x]`` HU.
    spacing : tuple of float
        ``(z, y, x)`` mm.
    full : bool
        True: the project's segmentation ``quantify.lung.lung_mask`` (airways removed,
        vessels filled; about 3x slower), falling back to the threshold mask if it is
        unavailable or finds nothing. False: the threshold mask (air inside the body),
        enough for the statistics the classical methods measure.
    """
    if not full:
        return _fallback_lung_mask(hu)
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
