"""The 2D noise power spectrum (NPS) of a CT volume, measured in uniform regions.

Square regions of interest (ROIs) are placed where the image has no structure: air
outside the body (the cleanest: no anatomy at all) and uniform soft tissue (fat or
muscle, where the local mean barely changes). Each ROI is detrended by a second-order
polynomial (removes the slow shading a plain mean would leave), Fourier transformed,
and ``|F|^2 dx dy / (N_x N_y)`` is averaged over the ROIs (IEC 62220 / ICRU 87
convention: the NPS integrates to the noise variance). The radial average gives the 1D
NPS used for the noise texture: its peak and mean frequency and its total power.

Why our own: no maintained Python package measures a CT NPS from patient images
(pylinac and others need a phantom); the method is a few lines of numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy import ndimage as ndi

from .regions import SliceRegions, slice_regions

#: ROI side in mm (rounded to an even pixel count between MIN_ROI_PX and MAX_ROI_PX).
ROI_MM = 24.0
MIN_ROI_PX = 16
MAX_ROI_PX = 64
#: An ROI whose smoothed image varies (5-95 % range) by more than this, and by more than
#: FLATNESS_FACTOR times the typical ROI of its region, holds structure (anatomy, table,
#: blanket, shading), not just noise. Relative to the typical ROI so that very noisy
#: scans, whose smoothed images vary more, keep their ROIs.
FLATNESS_HU = 12.0
FLATNESS_FACTOR = 2.0
#: An "air" ROI that is warmer than the scan's air *and* structured is not air: cut lung or a
#: blanket at the border of a crop. The scan's air is the median of its noise-like air ROIs (an
#: accredited scanner's air may read up to about 30 HU off -1000); warmer means by more than
#: WARM_MARGIN_HU (genuine air ROIs spread by about 5 HU). Without 3 noise-like ROIs to tell the
#: air level, warmer than WARM_AIR_HU (calibrated air: -1000).
WARM_AIR_HU = -990.0
WARM_MARGIN_HU = 8.0
MIN_LEVEL_ROIS = 3
#: Structured: the std of the region-drawing smoothing over the ROI, relative to the raw std. Noise
#: alone is mostly averaged away (air of our and the independent simulator's scans, lung1 and lung2:
#: median 0.03-0.24); anatomy survives the smoothing (lung2 cropped to 350 px: median 0.44).
STRUCTURED_RATIO = 0.25


@dataclass
class NPS:
    """A measured noise power spectrum.

    Attributes
    ----------
    region : str
        ``"air"`` or ``"tissue"``: where the ROIs were.
    freq : np.ndarray
        Radial bin centres, cycles/mm.
    radial : np.ndarray
        Radially averaged NPS, HU^2 mm^2.
    counts : np.ndarray
        FFT samples per radial bin (for weighting fits).
    nps2d : np.ndarray
        The 2D NPS, ``fftshift``-ed, HU^2 mm^2.
    pixel_mm : float
    n_rois : int
    variance : float
        Integral of the 2D NPS (HU^2); ``sqrt`` is the noise std seen by the ROIs.
    """

    region: str
    freq: np.ndarray
    radial: np.ndarray
    counts: np.ndarray
    nps2d: np.ndarray
    pixel_mm: float
    n_rois: int
    variance: float
    roi_px: int = 0
    notes: list = field(default_factory=list)

    @property
    def std(self) -> float:
        return float(math.sqrt(max(self.variance, 0.0)))

    @property
    def nyquist(self) -> float:
        return 0.5 / self.pixel_mm

    @property
    def peak_frequency(self) -> float:
        """Frequency of the radial NPS maximum (cycles/mm)."""
        return float(self.freq[int(np.argmax(self.radial))])

    @property
    def mean_frequency(self) -> float:
        """NPS-weighted mean frequency (cycles/mm), over the 2D spectrum."""
        n = self.nps2d.shape[0]
        f = np.fft.fftshift(np.fft.fftfreq(n, d=self.pixel_mm))
        fr = np.hypot(*np.meshgrid(f, f))
        total = float(self.nps2d.sum())
        return float((fr * self.nps2d).sum() / total) if total > 0 else 0.0

    def summary(self) -> dict:
        """JSON-ready figures (no arrays except the radial profile)."""
        return {"region": self.region, "n_rois": self.n_rois, "roi_px": self.roi_px,
                "std_hu": round(self.std, 3), "peak_frequency": round(self.peak_frequency, 4),
                "mean_frequency": round(self.mean_frequency, 4), "pixel_mm": round(self.pixel_mm, 4),
                "freq": [round(float(v), 4) for v in self.freq],
                "radial": [float(f"{v:.4g}") for v in self.radial], "notes": list(self.notes)}


def roi_size(pixel_mm: float, roi_mm: float = ROI_MM) -> int:
    """Even ROI side in pixels for ``roi_mm`` (default :data:`ROI_MM`)."""
    n = int(round(roi_mm / max(pixel_mm, 1e-3)))
    n = min(MAX_ROI_PX, max(MIN_ROI_PX, n))
    return n + (n % 2)


def _detrend_basis(n: int) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    y, x = (y - n / 2) / n, (x - n / 2) / n
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1).reshape(n * n, 6)


def _roi_corners(mask: np.ndarray, n: int, max_rois: int, rng: np.random.Generator) -> list:
    """Top-left corners of non-overlapping-ish ``n x n`` ROIs lying wholly inside ``mask``."""
    # a corner is valid when the whole n x n window is in the mask: erode by the window
    ok = ndi.minimum_filter(mask.astype(np.uint8), size=n, origin=(-(n // 2), -(n // 2)), mode="constant") > 0
    ok[mask.shape[0] - n + 1:, :] = False
    ok[:, mask.shape[1] - n + 1:] = False
    ys, xs = np.nonzero(ok)
    if ys.size == 0:
        return []
    # a coarse grid of candidates at half-ROI steps keeps ROIs from piling up in one place
    step = max(1, n // 2)
    keep = (ys % step == 0) & (xs % step == 0)
    ys, xs = ys[keep], xs[keep]
    if ys.size > max_rois:
        pick = rng.choice(ys.size, size=max_rois, replace=False)
        ys, xs = ys[pick], xs[pick]
    return list(zip(ys.tolist(), xs.tolist()))


def _flatness(smooth: np.ndarray, corners: list, n: int) -> np.ndarray:
    """5-95 % range (HU) of the smoothed image in each ROI."""
    out = np.empty(len(corners))
    for i, (y0, x0) in enumerate(corners):
        lo, hi = np.percentile(smooth[y0:y0 + n, x0:x0 + n], [5, 95])
        out[i] = hi - lo
    return out


def _flat_limit(ranges: np.ndarray, region: str) -> float:
    # Judged against the flattest ROIs, not the median: in a crop of the chest, cut lung
    # can still pass for outside air in places and its vessels would set a median far
    # above the noise of the true air (measured: lung2 cropped to 400 px read MTF50 0.10
    # c/mm instead of 0.32). Soft tissue is mostly anatomy: its flattest quarter; air's
    # flattest tenth.
    typical = np.percentile(ranges, 10 if region == "air" else 25)
    return float(max(FLATNESS_HU, FLATNESS_FACTOR * typical))


def _roi_stats(image: np.ndarray, smooth: np.ndarray, corner, n: int) -> tuple[float, bool]:
    """An ROI's mean HU and whether it is structured: the region-drawing smoothing keeps more than
    :data:`STRUCTURED_RATIO` of its std (noise alone is mostly averaged away; anatomy is not)."""
    y0, x0 = corner
    roi = image[y0:y0 + n, x0:x0 + n]
    kept = float(smooth[y0:y0 + n, x0:x0 + n].std())
    return float(roi.mean()), kept > STRUCTURED_RATIO * max(float(roi.std()), 1e-6)


def _without_warm_structure(hu: np.ndarray, picked: list, n: int) -> list:
    """``picked`` (``(regions, corners)`` per slice) without the air ROIs that are warmer than the scan's
    air and structured: cut lung or a blanket, not air. Either sign alone is not enough: a scanner's air
    may read some HU off -1000, and a smooth kernel's noise survives smoothing in part."""
    stats = [[_roi_stats(hu[r.z], r.smooth, c, n) for c in corners] for r, corners in picked]
    noise_like = [m for per_slice in stats for m, structured in per_slice if not structured]
    warm = float(np.median(noise_like)) + WARM_MARGIN_HU if len(noise_like) >= MIN_LEVEL_ROIS else WARM_AIR_HU
    return [(r, [c for c, (m, structured) in zip(corners, st) if not (structured and m > warm)])
            for (r, corners), st in zip(picked, stats)]


def _window(n: int) -> np.ndarray:
    """2D Hann window scaled to unit mean square (so the windowed NPS keeps its integral)."""
    w = np.outer(np.hanning(n + 2)[1:-1], np.hanning(n + 2)[1:-1])
    return w / np.sqrt(np.mean(w ** 2))


def _accumulate(image: np.ndarray, corners: list, n: int, basis: np.ndarray, pinv: np.ndarray,
                acc: np.ndarray) -> int:
    # A window against spectral leakage: an unwindowed ROI's spectrum is blurred by the
    # heavy-tailed Fejer kernel, which lifts the low frequencies of a ramp-like FBP noise
    # spectrum by 10-15 % (measured on synthetic very-sharp noise) and biases the kernel fit.
    win = _window(n)
    for y0, x0 in corners:
        roi = image[y0:y0 + n, x0:x0 + n].astype(np.float64).reshape(-1)
        resid = (roi - basis @ (pinv @ roi)).reshape(n, n)
        acc += np.abs(np.fft.fft2(resid * win)) ** 2
    return len(corners)


def radial_profile(nps2d_shifted: np.ndarray, pixel_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Radial average of a ``fftshift``-ed 2D spectrum: ``(freq, values, counts)`` up to Nyquist."""
    n = nps2d_shifted.shape[0]
    f = np.fft.fftshift(np.fft.fftfreq(n, d=pixel_mm))
    fr = np.hypot(*np.meshgrid(f, f))
    df = 1.0 / (n * pixel_mm)
    idx = np.rint(fr / df).astype(int)
    nbins = n // 2 + 1
    sel = idx < nbins
    sums = np.bincount(idx[sel], weights=nps2d_shifted[sel], minlength=nbins)
    counts = np.bincount(idx[sel], minlength=nbins)
    vals = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    return np.arange(nbins) * df, vals, counts


#: ROIs a scan's NPS is read from at most, shared by the slices read (16 slices x 24 ROIs): a scan of few
#: slices (a reference scan of 4) takes up to 96 per slice, as many in all as a long scan where its slices
#: offer that many candidates (else all of them; a share is not passed on). With 24 per slice whatever the
#: count, a 4-slice reference's kernel rested on 96 ROIs, and its MTF50 moved by its sampling error
#: (sd 0.010-0.0125 c/mm over ROI seeds): a reference-scan target's gap closed went 0.96 -> 0.94 when an
#: unrelated change to the air region reshuffled the draw.
TOTAL_ROIS = 384
#: the fewest ROIs a slice may take (what a scan of 16 or more slices read takes)
MIN_ROIS_PER_SLICE = 24


def rois_per_slice(slices: int) -> int:
    """Each read slice's share of :data:`TOTAL_ROIS` (at least :data:`MIN_ROIS_PER_SLICE`)."""
    return max(MIN_ROIS_PER_SLICE, -(-TOTAL_ROIS // max(1, int(slices))))


def measure_nps(hu: np.ndarray, spacing, regions: Optional[list[SliceRegions]] = None, region: str = "air",
                max_slices: int = 16, max_rois_per_slice: Optional[int] = None, seed: int = 0,
                roi_mm: float = ROI_MM) -> Optional[NPS]:
    """Measure the 2D NPS of a ``[z, y, x]`` HU volume in ``region``.

    Parameters
    ----------
    hu : np.ndarray
        ``[z, y, x]`` HU.
    spacing : sequence of float
        ``(z, y, x)`` mm.
    regions : list of SliceRegions, optional
        Precomputed :func:`~.regions.slice_regions` for the slices to use.
    region : {"air", "tissue"}
        Air outside the body, or uniform fat/muscle inside it.
    max_slices, max_rois_per_slice : int
        Sampling limits (the NPS converges with a few hundred ROIs); by default each slice read takes
        :func:`rois_per_slice` of them.
    seed : int
        ROI subsampling seed (the result is deterministic).
    roi_mm : float
        ROI side in mm (smaller ROIs fit narrower regions, at a coarser frequency sampling).

    Returns
    -------
    NPS or None
        None when fewer than 8 ROIs fit.
    """
    pixel = float(math.sqrt(spacing[1] * spacing[2]))
    n = roi_size(pixel, roi_mm)
    if regions is None:
        regions = slice_regions(hu, spacing, max_slices=max_slices)
    rng = np.random.default_rng(seed)
    per_slice = rois_per_slice(len(regions)) if max_rois_per_slice is None else int(max_rois_per_slice)
    basis = _detrend_basis(n)
    pinv = np.linalg.pinv(basis)
    acc = np.zeros((n, n))
    picked = []
    for r in regions:
        mask = r.air_roi if region == "air" else r.tissue_roi
        corners = _roi_corners(mask, n, per_slice, rng)
        if corners:
            picked.append((r, corners, _flatness(r.smooth, corners, n)))
    if not picked:
        return None
    limit = _flat_limit(np.concatenate([p[2] for p in picked]), region)
    picked = [(r, [c for c, rg in zip(corners, ranges) if rg <= limit]) for r, corners, ranges in picked]
    if region == "air":
        picked = _without_warm_structure(hu, picked, n)
    used = 0
    for r, keep in picked:
        used += _accumulate(hu[r.z], keep, n, basis, pinv, acc)
    if used < 8:
        return None
    nps2d = np.fft.fftshift(acc / used) * (spacing[1] * spacing[2]) / (n * n)
    # the quadratic detrend removes 6 degrees of freedom per ROI: undo that bias on the variance
    nps2d *= (n * n) / (n * n - 6.0)
    freq, radial, counts = radial_profile(nps2d, pixel)
    variance = float(nps2d.sum() / ((n * pixel) ** 2))
    return NPS(region, freq, radial, counts, nps2d, pixel, used, variance, n)
