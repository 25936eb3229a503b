"""2D noise power spectrum (NPS) in uniform ROIs, its radial curve, summaries and a similarity.

Written here because no kept library computes a CT NPS: it is the textbook estimator
(IEC 62220-1 style, as in AAPM TG-233):

    NPS(fx, fy) = (dx * dy) / (Nx * Ny) * < |DFT2(roi - fit)|^2 >_rois

where ``fit`` is a 2nd-order polynomial surface (detrending) of each ROI. For white
noise of variance sigma^2 the NPS is flat at ``sigma^2 * dx * dy`` (HU^2 mm^2) and it
integrates over frequency to the noise variance. The polynomial fit removes a few
degrees of freedom at the lowest frequencies, so the first radial bin (1/(N d)) reads
low after 2nd-order detrending; the similarity and summaries are dominated by the
other bins.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..errors import BadInputError


def _poly_basis(n: int, m: int, order: int) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:m].astype(np.float64)
    y, x = (y - y.mean()) / max(n, 1), (x - x.mean()) / max(m, 1)
    cols = [np.ones_like(x)]
    for d in range(1, order + 1):
        for i in range(d + 1):
            cols.append(x ** (d - i) * y ** i)
    return np.stack([c.ravel() for c in cols], axis=1)


def detrend(roi: np.ndarray, order: int = 2) -> np.ndarray:
    """``roi`` minus its least-squares polynomial surface of the given order (0 = mean)."""
    roi = np.asarray(roi, dtype=np.float64)
    basis = _poly_basis(*roi.shape, order)
    coef, *_ = np.linalg.lstsq(basis, roi.ravel(), rcond=None)
    return roi - (basis @ coef).reshape(roi.shape)


def nps_2d(rois, pixel_spacing, order: int = 2):
    """Ensemble 2D NPS of square or rectangular ROIs (all the same shape).

    Parameters
    ----------
    rois : array_like, shape (n, ny, nx)
        ROIs in HU.
    pixel_spacing : (dy, dx) in mm.
    order : int
        Polynomial detrending order.

    Returns
    -------
    (nps, fy, fx)
        ``nps`` shape (ny, nx), fftshifted, in HU^2 mm^2; ``fy``, ``fx`` frequency axes
        (cycles/mm), fftshifted.
    """
    rois = np.asarray(rois, dtype=np.float64)
    if rois.ndim == 2:
        rois = rois[None]
    if rois.ndim != 3 or rois.shape[0] == 0:
        raise BadInputError("nps_2d expects a stack of 2D ROIs, shape (n, ny, nx).")
    n, ny, nx = rois.shape
    dy, dx = float(pixel_spacing[0]), float(pixel_spacing[1])
    acc = np.zeros((ny, nx))
    for r in rois:
        acc += np.abs(np.fft.fft2(detrend(r, order))) ** 2
    nps = np.fft.fftshift(acc / n) * dx * dy / (nx * ny)
    fy = np.fft.fftshift(np.fft.fftfreq(ny, dy))
    fx = np.fft.fftshift(np.fft.fftfreq(nx, dx))
    return nps, fy, fx


def radial_nps(nps: np.ndarray, fy: np.ndarray, fx: np.ndarray, n_bins: int | None = None):
    """Radially averaged NPS.

    Bins have width ``1 / (N * d)`` (the frequency sample spacing of the larger axis)
    and run to the Nyquist frequency of the coarser axis; the DC bin is excluded
    (detrending removes it).

    Returns
    -------
    (f, nps_r)
        Bin centres (cycles/mm) and mean NPS per bin; empty bins are dropped.
    """
    FX, FY = np.meshgrid(fx, fy)
    fr = np.hypot(FX, FY)
    df = min(np.diff(fx).min() if len(fx) > 1 else 1.0, np.diff(fy).min() if len(fy) > 1 else 1.0)
    fmax = min(np.abs(fx).max(), np.abs(fy).max())
    if n_bins is None:
        n_bins = max(1, int(round(fmax / df)))
    edges = np.linspace(0.5 * df, fmax + 0.5 * df, n_bins + 1)
    idx = np.digitize(fr.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < n_bins)
    sums = np.bincount(idx[ok], weights=nps.ravel()[ok], minlength=n_bins)
    counts = np.bincount(idx[ok], minlength=n_bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    keep = counts > 0
    return centres[keep], sums[keep] / counts[keep]


def nps_summary(f: np.ndarray, nps_r: np.ndarray) -> dict:
    """Peak frequency, mean frequency ``sum(f NPS)/sum(NPS)`` and the radial area (~ noise level)."""
    f, p = np.asarray(f, float), np.asarray(nps_r, float)
    tot = p.sum()
    return {"peak_frequency": float(f[int(np.argmax(p))]) if len(p) else float("nan"),
            "mean_frequency": float((f * p).sum() / tot) if tot > 0 else float("nan")}


def nps_similarity(nps_a: np.ndarray, nps_b: np.ndarray) -> float:
    """Shape similarity of two radial NPS curves on the same bins: ``1 - 0.5 * sum|a - b|``.

    Each curve is first normalized to unit sum, so the value ignores the noise level
    (compare ``noise_std`` for that), lies in [0, 1], and is 1 for curves of identical
    shape.
    """
    a, b = np.clip(np.asarray(nps_a, float), 0, None), np.clip(np.asarray(nps_b, float), 0, None)
    if a.shape != b.shape:
        raise BadInputError(f"NPS curves differ in length: {a.shape} vs {b.shape}.")
    if a.sum() <= 0 or b.sum() <= 0:
        return float("nan")
    return float(1.0 - 0.5 * np.abs(a / a.sum() - b / b.sum()).sum())


def find_uniform_rois(reference: np.ndarray, roi: int = 32, max_rois: int = 64,
                      hu_range=(-250.0, 250.0), max_std: float = 20.0, smooth: float = 2.0,
                      mask: np.ndarray | None = None):
    """Corners ``(z, y, x)`` of non-overlapping square ROIs in uniform soft tissue.

    Uniformity is judged on the reference smoothed by a Gaussian of ``smooth`` pixels
    (so noise does not hide structure): a ROI qualifies when its smoothed mean lies in
    ``hu_range`` and its smoothed std is below ``max_std`` HU. Candidates are taken on a
    half-ROI lattice, most uniform first, without overlap, up to ``max_rois``, spread
    over slices. Use the **same** ROIs for every image of a comparison.
    """
    ref = np.asarray(reference, dtype=np.float32)
    nz, ny, nx = ref.shape
    if ny < roi or nx < roi:
        return []
    cands = []
    step = max(1, roi // 2)
    for z in range(nz):
        sm = ndi.gaussian_filter(ref[z], smooth)
        mean = ndi.uniform_filter(sm, roi, mode="nearest")
        sq = ndi.uniform_filter(sm * sm, roi, mode="nearest")
        std = np.sqrt(np.clip(sq - mean * mean, 0, None))
        h = roi // 2
        for y in range(0, ny - roi + 1, step):
            for x in range(0, nx - roi + 1, step):
                c = (y + h, x + h)
                if hu_range[0] <= mean[c] <= hu_range[1] and std[c] < max_std:
                    if mask is not None and not mask[z, y:y + roi, x:x + roi].all():
                        continue
                    cands.append((float(std[c]), z, y, x))
    cands.sort()
    taken: list[tuple[int, int, int]] = []
    per_slice: dict[int, int] = {}
    cap = max(1, int(np.ceil(max_rois / max(1, nz) * 2)))
    for _, z, y, x in cands:
        if per_slice.get(z, 0) >= cap:
            continue
        if any(t[0] == z and abs(t[1] - y) < roi and abs(t[2] - x) < roi for t in taken):
            continue
        taken.append((z, y, x))
        per_slice[z] = per_slice.get(z, 0) + 1
        if len(taken) >= max_rois:
            break
    return taken


def extract_rois(volume: np.ndarray, corners, roi: int = 32) -> np.ndarray:
    """Stack the ``roi`` x ``roi`` patches of ``volume`` at ``corners`` (from :func:`find_uniform_rois`)."""
    v = np.asarray(volume)
    return np.stack([v[z, y:y + roi, x:x + roi] for z, y, x in corners]) if corners else \
        np.zeros((0, roi, roi))


def nps_of(volume: np.ndarray, corners, pixel_spacing, roi: int = 32) -> dict | None:
    """Radial NPS and summaries of ``volume`` in the given ROIs; None without ROIs.

    Returns ``{"f", "nps", "noise_std", "peak_frequency", "mean_frequency", "n_rois"}``;
    ``noise_std`` is the mean std of the detrended ROIs (HU).
    """
    if not corners:
        return None
    rois = extract_rois(volume, corners, roi)
    nps, fy, fx = nps_2d(rois, pixel_spacing)
    f, p = radial_nps(nps, fy, fx)
    std = float(np.mean([detrend(r).std() for r in rois]))
    return {"f": f.tolist(), "nps": p.tolist(), "noise_std": std, "n_rois": len(corners),
            **nps_summary(f, p)}
