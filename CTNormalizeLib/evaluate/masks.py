"""Body and lung masks for the paired metrics.

The lung mask comes from ``CTNormalizeLib.quantify.lung.lung_mask`` when that module
is importable; otherwise a threshold fallback is used (and the result says so). All
metrics of one comparison use masks computed once, on the **target**, so that
differences between source, output and replicate reflect HU only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def _largest_components(mask: np.ndarray, n: int = 1) -> np.ndarray:
    lab, k = ndi.label(mask)
    if k == 0:
        return mask.astype(bool)
    sizes = ndi.sum(mask, lab, index=np.arange(1, k + 1))
    keep = np.argsort(sizes)[::-1][:n] + 1
    return np.isin(lab, keep)


def body_mask(hu: np.ndarray, threshold: float = -500.0) -> np.ndarray:
    """Body mask: the largest connected component above ``threshold`` HU, holes filled per slice.

    A light Gaussian (1 voxel) keeps noise from fragmenting the mask.
    """
    sm = ndi.gaussian_filter(np.asarray(hu, dtype=np.float32), 1.0)
    m = _largest_components(sm > threshold, 1)
    return np.stack([ndi.binary_fill_holes(s) for s in m])


def _fallback_lung_mask(hu: np.ndarray, body: np.ndarray) -> np.ndarray:
    sm = ndi.gaussian_filter(np.asarray(hu, dtype=np.float32), 1.0)
    air = (sm < -400) & body
    air = _largest_components(air, 2)
    # fill vessels inside the lung, slice by slice (a 3D fill would need closed lungs in z)
    return np.stack([ndi.binary_fill_holes(s) for s in air])


def lung_mask(hu: np.ndarray, spacing, direction=None) -> tuple[np.ndarray, str]:
    """Lung mask of ``hu`` and where it came from.

    Returns
    -------
    (mask, source)
        ``source`` is ``"quantify.lung"`` or ``"threshold-fallback"``.
    """
    import importlib

    try:
        qlung = importlib.import_module("CTNormalizeLib.quantify.lung")
    except ImportError:
        qlung = None
    if qlung is not None and hasattr(qlung, "lung_mask"):
        m = qlung.lung_mask(hu, spacing, direction)
        m = getattr(m, "lungs", getattr(m, "mask", m))
        if isinstance(m, tuple):
            m = m[0]
        return np.asarray(m) > 0, "quantify.lung"
    return _fallback_lung_mask(hu, body_mask(hu)), "threshold-fallback"
