"""Image-noise estimate (HU std) used to set denoising strength and Wiener regularization.

The measured signature's soft-tissue noise (:func:`CTNormalizeLib.signature.measure_signature`)
when it can be measured; otherwise a robust local-std estimate in soft tissue. Both work on any reconstruction kernel; the
fallback's window is small, so for strongly correlated (smooth-kernel) noise it reads
somewhat low, which is harmless where only ratios of estimates are used.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..imaging.noise import robust_sigma


def local_noise_std(hu: np.ndarray, lo: float = -200.0, hi: float = 200.0, window: int = 5,
                    max_slices: int = 24) -> float:
    """Median local standard deviation in ``window``² in-plane windows over soft-tissue voxels.

    Soft tissue is picked on a smoothed copy (so heavy noise does not clip the selection)
    and eroded so windows rarely straddle an edge. Falls back to all voxels when no soft
    tissue is found. ``max_slices`` evenly spaced slices are used to keep it fast.
    """
    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim == 2:
        hu = hu[None]
    idx = np.unique(np.linspace(0, hu.shape[0] - 1, min(max_slices, hu.shape[0])).round().astype(int))
    vals = []
    for z in idx:
        sl = hu[z].astype(np.float64)
        m1 = ndi.uniform_filter(sl, window)
        m2 = ndi.uniform_filter(sl * sl, window)
        sd = np.sqrt(np.maximum(m2 - m1 * m1, 0.0)) * np.sqrt(window * window / (window * window - 1.0))
        smooth = ndi.gaussian_filter(sl, 2.0)
        sel = (smooth > lo) & (smooth < hi)
        sel = ndi.binary_erosion(sel, iterations=window // 2 + 1)
        if sel.sum() > 50:
            vals.append(sd[sel])
    if not vals:
        # neighbour differences have twice the noise variance and a known centre, 0
        return robust_sigma(np.diff(hu, axis=-1), center=0.0) / float(np.sqrt(2.0))
    return float(np.median(np.concatenate(vals)))


def estimate_noise_std(hu: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> float:
    """Noise std (HU) of a CT volume: the measured signature's, else :func:`local_noise_std`."""
    from ..signature import measure_signature
    from ..volume import Volume

    sig = measure_signature(Volume(np.asarray(hu, dtype=np.float32), spacing=tuple(spacing)), with_edge=False)
    if sig.noise_hu is not None and np.isfinite(sig.noise_hu) and sig.noise_hu > 0:
        return float(sig.noise_hu)
    return local_noise_std(hu)
