"""Voxel-wise paired metrics: L1 HU in masks, PSNR and SSIM per plane over an HU window.

All functions take arrays already on one grid (see :mod:`.grid`) and never modify them.
"""

from __future__ import annotations

import numpy as np

from ..errors import BadInputError
from ..quantify.emphysema import emphysema_dice, emphysema_index

LUNG_WINDOW = (-1350.0, 150.0)  # HU (level -600, width 1500)
PLANES = {"axial": 0, "coronal": 1, "sagittal": 2}


def _check_pair(a: np.ndarray, b: np.ndarray):
    if a.shape != b.shape:
        raise BadInputError(f"Paired arrays differ in shape: {a.shape} vs {b.shape}.")


def l1_hu(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute HU difference, over ``mask`` (all voxels when None).

    Returns NaN for an empty mask.
    """
    _check_pair(a, b)
    d = np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        _check_pair(a, m)
        if not m.any():
            return float("nan")
        d = d[m]
    return float(d.mean())


def _window(x: np.ndarray, window) -> np.ndarray:
    lo, hi = window
    return np.clip(np.asarray(x, dtype=np.float64), lo, hi)


def _slices(n: int, max_slices: int | None) -> np.ndarray:
    if max_slices is None or n <= max_slices:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_slices).round().astype(int))


def plane_metrics(test: np.ndarray, reference: np.ndarray, window=LUNG_WINDOW,
                  max_slices: int | None = 48, mask: np.ndarray | None = None) -> dict:
    """PSNR and SSIM per plane (axial, coronal, sagittal) over an HU window.

    Both images are clipped to ``window`` and compared with ``data_range = hi - lo``
    (skimage.metrics). Each plane's value is the mean over its 2D slices (evenly
    sampled down to ``max_slices``); slices whose reference is constant after
    windowing and slices outside ``mask`` (when given) are skipped. SSIM uses
    skimage's default 7x7 window (smaller when a slice is smaller).

    Returns
    -------
    dict
        ``{"window_hu": [lo, hi], "data_range": hi-lo, "psnr": {plane: dB}, "ssim": {plane: value},
        "psnr_volume": dB over all windowed voxels}``.
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    _check_pair(test, reference)
    if test.ndim != 3:
        raise BadInputError("plane_metrics expects 3D [z, y, x] arrays.")
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise BadInputError(f"Bad HU window {window}: the upper bound must exceed the lower.")
    rng = hi - lo
    t, r = _window(test, window), _window(reference, window)
    out = {"window_hu": [lo, hi], "data_range": rng, "psnr": {}, "ssim": {}}
    for name, ax in PLANES.items():
        ps, ss = [], []
        for i in _slices(t.shape[ax], max_slices):
            ts, rs = np.take(t, i, axis=ax), np.take(r, i, axis=ax)
            if mask is not None and not np.take(mask, i, axis=ax).any():
                continue
            if rs.max() == rs.min():
                continue
            w = min(7, min(ts.shape) - (1 - min(ts.shape) % 2))
            if w < 3:
                continue
            mse = np.mean((ts - rs) ** 2)
            ps.append(np.inf if mse == 0 else peak_signal_noise_ratio(rs, ts, data_range=rng))
            ss.append(structural_similarity(rs, ts, data_range=rng, win_size=w))
        out["psnr"][name] = float(np.mean(ps)) if ps else float("nan")
        out["ssim"][name] = float(np.mean(ss)) if ss else float("nan")
    mse = np.mean((t - r) ** 2)
    out["psnr_volume"] = float("inf") if mse == 0 else float(10 * np.log10(rng**2 / mse))
    return out


def laa_percent(hu: np.ndarray, lung: np.ndarray, threshold: float = -950.0) -> float:
    """Threshold fallback for LAA%: percentage of lung voxels below ``threshold`` HU."""
    m = np.asarray(lung, dtype=bool)
    if not m.any():
        return float("nan")
    return float(100.0 * np.mean(np.asarray(hu)[m] < threshold))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2.0 * np.logical_and(a, b).sum() / s)


def emphysema_measures(hu: np.ndarray, spacing, lung: np.ndarray, threshold: float = -950.0) -> dict:
    """LAA% and emphysema mask from :func:`CTNormalizeLib.quantify.emphysema_index`.

    Returns ``{"laa_percent", "mask", "source"}``.
    """
    r = emphysema_index(hu, spacing, np.asarray(lung, dtype=bool), threshold)
    return {"laa_percent": float(r.laa_percent), "mask": np.asarray(r.emphysema_mask, dtype=bool),
            "source": "quantify.emphysema"}


def emphysema_metrics(test: np.ndarray, reference: np.ndarray, spacing, lung: np.ndarray,
                      threshold: float = -950.0) -> dict:
    """Emphysema-index error and emphysema Dice of ``test`` against ``reference``.

    Both are measured inside the same ``lung`` mask (the reference's), so the error
    reflects HU only. Returns ``laa_test``, ``laa_reference``, ``ei_error`` =
    ``|LAA%_test - LAA%_reference|`` (percentage points) and ``emphysema_dice``.
    """
    _check_pair(test, reference)
    a = emphysema_measures(test, spacing, lung, threshold)
    b = emphysema_measures(reference, spacing, lung, threshold)
    return {"threshold_hu": float(threshold), "laa_test": a["laa_percent"],
            "laa_reference": b["laa_percent"],
            "ei_error": abs(a["laa_percent"] - b["laa_percent"]),
            "emphysema_dice": float(emphysema_dice(a["mask"], b["mask"])), "source": a["source"]}
