"""Image-noise estimate (air outside the body, fat, muscle) and the relative dose it implies.

Noise is measured on a high-pass residual (voxel minus its in-plane local mean), so
smooth anatomy does not inflate it, with a robust (MAD) standard deviation inside eroded
air / fat / muscle masks. The masks are drawn on a smoothed image so that the noise itself
does not decide which voxels are counted (thresholding raw noisy values would truncate
the distribution and bias the std low).

Relative dose follows quantum noise, ``std ~ 1/sqrt(dose)`` and ``std ~ 1/sqrt(thickness)``:
``dose = (std_ref(kernel, pixel) / sqrt(thickness) / std)^2`` with ``std_ref`` the
full-dose, 1 mm noise of the kernel class in :data:`NOISE_REFERENCE`, measured **with
this same estimator** on the simulator (:func:`calibrate_from_simulator`).

Pixel size matters for sharp kernels: their noise extends past the Nyquist frequency of
coarse pixels, so finer pixels show more of it. :func:`noise_band_std` predicts this
from the kernel's MTF (FBP noise power ``|f| W(f)^2`` times the estimator's high-pass,
integrated up to Nyquist), and the reference is scaled by it from
:data:`REFERENCE_PIXEL_MM`. On the simulator this model predicts the measured change
from 1.0 to 0.5 mm pixels within ~5 %, and even the ratios between kernel classes
within ~10 %.

Limits: noise also grows with patient size and drops with iterative reconstruction, so
an image-based dose is a rough, patient-dependent estimate; its confidence says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Mapping, Optional, Union

import numpy as np
from scipy import ndimage

from ..volume import Volume
from .kernels import KERNEL_CLASSES, kernel_class, kernel_mtf

# Full-dose noise (robust HU std of the estimate_noise residual) at 1 mm slice thickness and
# REFERENCE_PIXEL_MM pixels, per kernel class, in soft tissue (fat/muscle) and in air outside
# the body. Measured with calibrate_from_simulator(seed=7, shape=(16, 274, 274),
# spacing=(0.5, 0.7, 0.7), thickness=1) on simulator 1.0 / its phantom: "dose 1.0" is the
# simulator's full dose. Re-run it when the simulator's noise model changes.
# Tissue includes the phantom's own fine texture (dose-independent), air does not; air
# outside the body is about half as noisy as tissue (also so in lung1, a real scan).
NOISE_REFERENCE: dict[str, dict[str, float]] = {
    "smooth": {"tissue": 8.27, "air": 4.01},
    "standard": {"tissue": 12.77, "air": 6.73},
    "sharp": {"tissue": 22.72, "air": 12.56},
    "very-sharp": {"tissue": 30.34, "air": 17.37},
}
NOISE_REFERENCE_SOURCE = "simulator 1.0, phantom seed 7, 0.7 mm pixels, 1 mm slices"
NOISE_REFERENCE_PROVISIONAL = False  # True would flag dose details as "provisional"
REFERENCE_PIXEL_MM = 0.7
WINDOW_MM = 5.0

FAT_HU = (-150.0, -50.0)
MUSCLE_HU = (10.0, 70.0)
AIR_BELOW_HU = -900.0
BODY_ABOVE_HU = -500.0
_MAD_TO_STD = 1.4826


@dataclass
class NoiseEstimate:
    """Robust noise std (HU) per region, with voxel counts; None where too few voxels.

    ``air_clipped_fraction`` is the share of air voxels sitting at the volume's minimum
    when that minimum is a clip level near air (e.g. -1024): clipped air truncates the
    noise and biases ``air_std`` low, so it is then not used for dose.
    """

    air_std: Optional[float]
    air_voxels: int
    fat_std: Optional[float]
    fat_voxels: int
    muscle_std: Optional[float]
    muscle_voxels: int
    air_clipped_fraction: float = 0.0
    slices_used: int = 0
    window: int = 5  # pixels
    pixel_mm: float = 0.0  # in-plane pixel size of the measured volume (0 = unknown)
    window_mm: float = WINDOW_MM

    @property
    def tissue_std(self) -> Optional[float]:
        """Voxel-weighted mean of the fat and muscle stds (None if neither)."""
        parts = [(s, n) for s, n in ((self.fat_std, self.fat_voxels), (self.muscle_std, self.muscle_voxels))
                 if s is not None]
        if not parts:
            return None
        return float(sum(s * n for s, n in parts) / sum(n for _, n in parts))

    @property
    def tissue_voxels(self) -> int:
        return (self.fat_voxels if self.fat_std is not None else 0) + \
            (self.muscle_voxels if self.muscle_std is not None else 0)

    @property
    def air_usable(self) -> bool:
        return self.air_std is not None and self.air_clipped_fraction <= 0.02

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tissue_std"] = self.tissue_std
        d["tissue_voxels"] = self.tissue_voxels
        return d


def _robust_std(values: np.ndarray) -> float:
    med = np.median(values)
    return float(_MAD_TO_STD * np.median(np.abs(values - med)))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def estimate_noise(volume: Volume, max_slices: int = 16, window_mm: float = WINDOW_MM,
                   min_voxels: int = 300) -> NoiseEstimate:
    """Robust noise std in air outside the body, in fat (-150..-50 HU) and muscle (10..70 HU).

    Parameters
    ----------
    volume : Volume
    max_slices : int
        At most this many slices, evenly spread, are used (the estimate needs no more).
    window_mm : float
        In-plane width (mm) of the local mean removed before measuring, rounded to an odd
        pixel count >= 3. Set in mm, not pixels, because noise correlation follows the
        kernel's MTF in mm: the estimate then measures the same noise band at any pixel size.
    min_voxels : int
        A region with fewer voxels gets ``None`` as its std.

    Returns
    -------
    NoiseEstimate
    """
    hu = volume.hu
    nz = hu.shape[0]
    pixel = math.sqrt(volume.spacing[1] * volume.spacing[2])
    window = max(3, int(round(window_mm / pixel)) | 1)
    idx = np.unique(np.linspace(0, nz - 1, min(nz, max_slices)).round().astype(int))
    vmin = float(np.min(hu))
    clip_level = vmin if -1100.0 <= vmin <= -950.0 else None
    # Padding outside the field of view: a repeated value far below air (-2000, -3024, ...).
    # Detected by value, not by a threshold, which would also cut noisy low-dose air.
    pad = vmin if vmin < -1100.0 and np.count_nonzero(hu[idx] == vmin) > 1e-3 * hu[idx].size else None
    # White noise: var(x - mean_k(x)) = var(x) (1 - 1/k^2); undo that factor.
    scale = 1.0 / math.sqrt(1.0 - 1.0 / window**2)
    erode = np.ones((3, 3), bool)
    r_edge = window // 2 + 1
    collected = {"air": [], "fat": [], "muscle": []}
    clipped = 0
    for k in idx:
        x = hu[k].astype(np.float32)
        local = ndimage.uniform_filter(x, window, mode="nearest")
        resid = (x - local) * scale
        smooth = ndimage.uniform_filter(x, 2 * window - 1, mode="nearest")
        valid = (ndimage.minimum_filter(x, window, mode="nearest") > pad + 0.5) if pad is not None \
            else np.ones(x.shape, bool)
        body = ndimage.binary_fill_holes(_largest_component(smooth > BODY_ABOVE_HU))
        near_body = ndimage.binary_dilation(body, erode, iterations=2 * r_edge)
        regions = {
            "air": ~near_body & (smooth < AIR_BELOW_HU) & valid,
            "fat": body & (smooth >= FAT_HU[0]) & (smooth <= FAT_HU[1]) & valid,
            "muscle": body & (smooth >= MUSCLE_HU[0]) & (smooth <= MUSCLE_HU[1]) & valid,
        }
        for name, m in regions.items():
            m = ndimage.binary_erosion(m, erode, iterations=r_edge)
            if m.any():
                collected[name].append(resid[m])
                if name == "air" and clip_level is not None:
                    clipped += int(np.count_nonzero(x[m] <= clip_level + 0.5))
    out = {}
    for name, chunks in collected.items():
        vals = np.concatenate(chunks) if chunks else np.empty(0, np.float32)
        out[name] = (_robust_std(vals) if vals.size >= min_voxels else None, int(vals.size))
    n_air = out["air"][1]
    return NoiseEstimate(
        air_std=out["air"][0], air_voxels=n_air,
        fat_std=out["fat"][0], fat_voxels=out["fat"][1],
        muscle_std=out["muscle"][0], muscle_voxels=out["muscle"][1],
        air_clipped_fraction=float(clipped / n_air) if n_air else 0.0,
        slices_used=int(len(idx)), window=int(window), pixel_mm=float(pixel), window_mm=float(window_mm),
    )


@lru_cache(maxsize=256)
def noise_band_std(kernel: str, pixel_mm: float, window_mm: float = WINDOW_MM) -> float:
    """Model std (arbitrary units) that :func:`estimate_noise` sees for white projection noise.

    FBP noise power ``|f| W(f)^2`` (ramp times the kernel's apodization squared), times
    the estimator's high-pass ``|1 - box(fx) box(fy)|^2`` (the local-mean window), summed
    over the 2D band up to the pixel's Nyquist frequency, with the estimator's white-noise
    correction. Only ratios of this are meaningful.
    """
    p = float(pixel_mm)
    k = max(3, int(round(window_mm / p)) | 1)
    n = 256
    f = (np.arange(n) - n / 2 + 0.5) / (n * p)
    fx, fy = np.meshgrid(f, f)
    fr = np.hypot(fx, fy)
    nps = fr * kernel_mtf(kernel, fr) ** 2

    def box(fq):  # transfer function of a k-pixel moving average
        x = np.pi * fq * p
        return np.sin(k * x) / (k * np.sin(x))

    h = 1.0 - box(fx) * box(fy)
    var = float(np.sum(nps * h ** 2)) * (f[1] - f[0]) ** 2 / (1.0 - 1.0 / k ** 2)
    return math.sqrt(var)


def pixel_factor(kernel: str, pixel_mm: Optional[float]) -> float:
    """Noise std at ``pixel_mm`` relative to :data:`REFERENCE_PIXEL_MM`, by :func:`noise_band_std`."""
    if not pixel_mm or pixel_mm <= 0:
        return 1.0
    cls = kernel_class(kernel)
    return noise_band_std(cls, round(float(pixel_mm), 3)) / noise_band_std(cls, REFERENCE_PIXEL_MM)


def reference_std(kernel: str, thickness: float, region: str = "tissue",
                  reference_table: Optional[Mapping] = None, pixel_mm: Optional[float] = None) -> float:
    """Full-dose noise std (HU) of ``kernel`` at ``thickness`` mm and ``pixel_mm`` pixels.

    ``table[kernel][region] / sqrt(thickness) * pixel_factor(kernel, pixel_mm)``; no pixel
    correction when ``pixel_mm`` is None.
    """
    table = NOISE_REFERENCE if reference_table is None else reference_table
    base = float(table[kernel_class(kernel)][region]) / math.sqrt(max(float(thickness), 1e-3))
    return base * pixel_factor(kernel, pixel_mm)


def relative_dose(noise_std: float, kernel: str, thickness: float,
                  reference_table: Optional[Mapping] = None, region: str = "tissue",
                  pixel_mm: Optional[float] = None) -> float:
    """Dose as a fraction of full dose implied by a measured noise std.

    ``dose = (std_ref(kernel, thickness) / noise_std)^2`` since quantum noise scales as
    ``1/sqrt(dose)``; ``std_ref`` scales as ``1/sqrt(thickness)`` from the 1 mm table.

    Parameters
    ----------
    noise_std : float
        Measured std (HU) from :func:`estimate_noise` in ``region``.
    kernel : str
        Kernel class or vendor name.
    thickness : float
        Slice thickness, mm.
    reference_table : mapping, optional
        ``{class: {"tissue": std, "air": std}}`` at full dose, 1 mm; default :data:`NOISE_REFERENCE`.
    region : {"tissue", "air"}
    pixel_mm : float, optional
        In-plane pixel size of the measured image; the reference is scaled to it
        (:func:`pixel_factor`). None: no correction.
    """
    if not noise_std or noise_std <= 0 or not math.isfinite(noise_std):
        raise ValueError(f"noise std must be positive, got {noise_std!r}")
    return (reference_std(kernel, thickness, region, reference_table, pixel_mm) / float(noise_std)) ** 2


def calibrate_reference(std_by_kernel: Mapping[str, Union[NoiseEstimate, Mapping, float]],
                        thickness: float = 1.0, pixel_mm: Optional[float] = None) -> dict[str, dict[str, float]]:
    """Build a :data:`NOISE_REFERENCE`-style table from full-dose measurements.

    Parameters
    ----------
    std_by_kernel : mapping
        Kernel class -> a :class:`NoiseEstimate` of a full-dose scan with that kernel, or
        ``{"tissue": std, "air": std}``, or one std used for both regions.
    thickness : float
        Slice thickness (mm) of those scans; values are scaled to 1 mm by ``sqrt(thickness)``.
    pixel_mm : float, optional
        Pixel size of those scans (default: taken from a :class:`NoiseEstimate`, else no
        correction); values are scaled to :data:`REFERENCE_PIXEL_MM` by :func:`pixel_factor`.

    Returns
    -------
    dict
        ``{class: {"tissue": std_1mm, "air": std_1mm}}``; classes not given are missing
        (``relative_dose`` falls back to nothing for them, so give all four).
    """
    f = math.sqrt(float(thickness))
    table = {}
    for kernel, m in std_by_kernel.items():
        cls = kernel_class(kernel)
        px = pixel_mm
        if isinstance(m, NoiseEstimate):
            tissue, air = m.tissue_std, (m.air_std if m.air_usable else None)
            px = px or m.pixel_mm or None
        elif isinstance(m, Mapping):
            tissue, air = m.get("tissue"), m.get("air")
        else:
            tissue = air = float(m)
        if tissue is None and air is None:
            raise ValueError(f"no usable noise measurement for kernel {kernel!r}")
        g = f / pixel_factor(cls, px)
        table[cls] = {"tissue": float(tissue if tissue is not None else air) * g,
                      "air": float(air if air is not None else tissue) * g}
    return table


@dataclass
class DoseEstimate:
    """A relative dose from image noise, with confidence and a one-line explanation."""

    dose: Optional[float]
    confidence: float
    detail: str
    dose_tissue: Optional[float] = None
    dose_air: Optional[float] = None


def estimate_dose(noise: NoiseEstimate, kernel: Optional[str], thickness: float,
                  reference_table: Optional[Mapping] = None, kernel_known: bool = True) -> DoseEstimate:
    """Relative dose from a :class:`NoiseEstimate`, with a confidence in [0, 1].

    The dose comes from the noise in air outside the body when that is usable (enough
    voxels, not clipped), else from tissue (fat+muscle). Air is preferred because tissue
    has its own fine texture, a dose-independent variance that pulls tissue-based doses
    toward 1 (on simulated quarter-dose phantom scans tissue gave ~0.35, air ~0.26).
    Confidence grows with the voxel count and drops when air and tissue disagree; it is
    capped at 0.8 because noise also depends on patient size and reconstruction
    (iterative methods lower it), and halved when the kernel is unknown (``standard`` is
    then assumed).
    """
    cls = kernel if kernel in KERNEL_CLASSES else "standard"
    notes = []
    if not kernel_known:
        notes.append(f"kernel unknown, assumed {cls}")
    px = noise.pixel_mm or None
    d_t = relative_dose(noise.tissue_std, cls, thickness, reference_table, "tissue", px) \
        if noise.tissue_std else None
    d_a = relative_dose(noise.air_std, cls, thickness, reference_table, "air", px) if noise.air_usable else None
    if noise.air_std is not None and not noise.air_usable:
        notes.append(f"air clipped ({100 * noise.air_clipped_fraction:.0f}% at the minimum), not used")
    if d_t is None and d_a is None:
        return DoseEstimate(None, 0.0, "no air or soft tissue region large enough to measure noise")
    if d_a is not None:
        dose, n = d_a, noise.air_voxels
        src = f"air noise {noise.air_std:.1f} HU in {n} voxels at {thickness:g} mm"
    else:
        dose, n = d_t, noise.tissue_voxels
        src = f"tissue noise {noise.tissue_std:.1f} HU in {n} voxels at {thickness:g} mm"
        notes.append("no usable air; tissue texture biases this toward 1")
    conf = 0.8 * min(1.0, math.sqrt(n / 20000.0))
    if d_t is not None and d_a is not None:
        conf *= math.exp(-abs(math.log(d_a / d_t)) / math.log(4.0))
        notes.append(f"tissue noise {noise.tissue_std:.1f} HU gives {d_t:.2g}")
    else:
        conf *= 0.7
    if not kernel_known:
        conf *= 0.5
    if dose > 4.0 or dose < 0.01:
        notes.append(f"raw estimate {dose:.3g} clipped to [0.01, 4]")
        dose = min(4.0, max(0.01, dose))
        conf *= 0.5
    if NOISE_REFERENCE_PROVISIONAL and reference_table is None:
        notes.append("provisional noise reference")
    detail = "; ".join([src] + notes)
    return DoseEstimate(float(dose), float(round(conf, 3)), detail, d_t, d_a)


def calibrate_from_simulator(seed: int = 7, shape=(16, 274, 274), spacing=(0.5, REFERENCE_PIXEL_MM, REFERENCE_PIXEL_MM),
                             thickness: float = 1.0, noise_seed: int = 3) -> dict[str, dict[str, float]]:
    """Measure a :data:`NOISE_REFERENCE` table on full-dose simulated scans of a phantom.

    Each kernel class is simulated at dose 1.0 and ``thickness`` from one phantom (seed
    < 1000: a training seed), its noise measured with :func:`estimate_noise`, and the
    result scaled to 1 mm and :data:`REFERENCE_PIXEL_MM` by :func:`calibrate_reference`.
    Takes ~20 s on 2 cores. Paste the result into :data:`NOISE_REFERENCE`.

    Returns
    -------
    dict
        ``{class: {"tissue": std_1mm, "air": std_1mm}}``.
    """
    from ..simulate.phantom import make_phantom
    from ..simulate.scanner import project_truth, simulate_scan
    from .protocol import Protocol

    truth = make_phantom(seed, shape=shape, spacing=spacing).volume
    proj = project_truth(truth)
    measured = {}
    for k in KERNEL_CLASSES:
        scan = simulate_scan(truth, Protocol(kernel=k, dose=1.0, thickness=thickness), seed=noise_seed,
                             projections=proj)
        measured[k] = estimate_noise(scan)
    return calibrate_reference(measured, thickness=thickness)
