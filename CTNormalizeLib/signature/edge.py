"""In-plane system MTF from the body-air edge: edge spread -> line spread -> MTF.

The skin is a long, high-contrast (about 1000 HU) edge that every CT has, curved gently
enough (radius > 50 mm) to act as a straight edge over a few millimetres. Its outline is
found with sub-pixel accuracy as the -500 HU iso-contour of a lightly smoothed slice
(scikit-image ``find_contours``); every voxel near it gets its signed distance to the
outline, and averaging HU in 0.1-pixel distance bins over the whole outline and many
slices gives an oversampled edge spread function (ESF), as the slanted-edge method does.
Its derivative, the line spread function, is windowed and Fourier transformed into the
MTF. Unlike the noise texture, this sees all blur that acts on anatomy (filter,
interpolation, detector, focal spot, iterative reconstruction), at the price of anatomy:
skin and subcutaneous fat make the tissue side of the edge not quite flat, so the MTF
is reliable up to about MTF10 and its confidence says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from .regions import SliceRegions

EDGE_LEVEL_HU = -500.0
HALF_WIDTH_MM = 5.0
BIN_PX = 0.1
MIN_EDGE_MM = 60.0


@dataclass
class EdgeMTF:
    """The edge-based MTF with the ESF it came from.

    ``freq`` (cycles/mm) and ``mtf`` up to Nyquist; ``mtf50``/``mtf10`` in cycles/mm (``inf``
    when the MTF stays above the level up to Nyquist); ``edge_mm`` is the outline length used.
    """

    freq: np.ndarray
    mtf: np.ndarray
    mtf50: float
    mtf10: float
    esf_x: np.ndarray
    esf: np.ndarray
    contrast: float
    edge_mm: float
    confidence: float
    notes: list = field(default_factory=list)

    def summary(self) -> dict:
        fin = lambda v: round(v, 4) if math.isfinite(v) else None  # noqa: E731
        return {"mtf50": fin(self.mtf50), "mtf10": fin(self.mtf10), "contrast_hu": round(self.contrast, 1),
                "edge_mm": round(self.edge_mm, 1), "confidence": self.confidence, "notes": list(self.notes)}


def _outline(smooth: np.ndarray, body: np.ndarray):
    from skimage.measure import find_contours

    contours = find_contours(smooth, EDGE_LEVEL_HU)
    if not contours:
        return None
    c = max(contours, key=len)
    if len(c) < 20:
        return None
    # densify so the nearest outline point is within ~0.05 px of the true foot point
    seg = np.hypot(*np.diff(c, axis=0).T)
    t = np.concatenate([[0.0], np.cumsum(seg)])
    tt = np.arange(0.0, t[-1], 0.05)
    return np.stack([np.interp(tt, t, c[:, 0]), np.interp(tt, t, c[:, 1])], axis=1), float(t[-1])


def _slice_samples(image: np.ndarray, r: SliceRegions, pixel: float, half_px: float):
    smooth = ndi.gaussian_filter(image.astype(np.float32), 1.0)
    found = _outline(smooth, r.body)
    if found is None:
        return None
    pts, length_px = found
    near = ndi.binary_dilation(ndi.binary_dilation(r.body) ^ ndi.binary_erosion(r.body),
                               iterations=int(math.ceil(half_px)) + 1)
    ys, xs = np.nonzero(near)
    dist, _ = cKDTree(pts).query(np.stack([ys, xs], axis=1), distance_upper_bound=half_px + 1)
    ok = np.isfinite(dist)
    ys, xs, dist = ys[ok], xs[ok], dist[ok]
    sign = np.where(smooth[ys, xs] > EDGE_LEVEL_HU, 1.0, -1.0)
    return sign * dist, image[ys, xs].astype(np.float64), length_px * pixel


def edge_mtf(hu: np.ndarray, spacing, regions: list[SliceRegions]) -> Optional[EdgeMTF]:
    """Measure the in-plane MTF at the body outline on the slices of ``regions``.

    Parameters
    ----------
    hu : np.ndarray
        ``[z, y, x]`` HU.
    spacing : sequence of float
        ``(z, y, x)`` mm.
    regions : list of SliceRegions
        From :func:`~.regions.slice_regions` (their body masks).

    Returns
    -------
    EdgeMTF or None
        None when no usable outline was found (e.g. a field of view inside the body).
    """
    pixel = float(math.sqrt(spacing[1] * spacing[2]))
    half_px = HALF_WIDTH_MM / pixel
    d_all, v_all, length = [], [], 0.0
    for r in regions:
        s = _slice_samples(hu[r.z], r, pixel, half_px)
        if s is None:
            continue
        d, v, L = s
        d_all.append(d)
        v_all.append(v)
        length += L
    if length < MIN_EDGE_MM:
        return None
    d = np.concatenate(d_all)
    v = np.concatenate(v_all)
    edges = np.arange(-half_px, half_px + BIN_PX, BIN_PX)
    idx = np.digitize(d, edges) - 1
    ok = (idx >= 0) & (idx < edges.size - 1)
    sums = np.bincount(idx[ok], weights=v[ok], minlength=edges.size - 1)
    counts = np.bincount(idx[ok], minlength=edges.size - 1)
    if np.count_nonzero(counts) < 0.8 * counts.size:
        return None
    x = 0.5 * (edges[:-1] + edges[1:])
    esf = np.interp(x, x[counts > 0], sums[counts > 0] / counts[counts > 0])
    # the ESF's tails: air on one side, the first millimetres of tissue on the other
    lo = float(np.median(esf[x < -0.6 * half_px]))
    hi = float(np.median(esf[(x > 0.3 * half_px) & (x < 0.6 * half_px)]))
    contrast = hi - lo
    if contrast < 300.0:
        return None
    esf_n = (esf - lo) / contrast
    lsf = np.gradient(esf_n, BIN_PX * pixel)
    lsf *= np.hanning(lsf.size)
    n = 4 * lsf.size
    spec = np.abs(np.fft.rfft(lsf, n=n)) * BIN_PX * pixel
    freq = np.fft.rfftfreq(n, d=BIN_PX * pixel)
    keep = freq <= 0.5 / pixel + 1e-9
    freq, spec = freq[keep], spec[keep] / max(spec[0], 1e-12)

    def cross(level):
        below = spec < level
        return float(freq[np.argmax(below)]) if below.any() else math.inf

    notes = []
    conf = min(1.0, length / 600.0)
    if length < 200:
        notes.append(f"short outline ({length:.0f} mm)")
    return EdgeMTF(freq, spec, cross(0.5), cross(0.1), x * pixel, esf, contrast, length, float(round(conf, 3)), notes)
