"""Per-scan figures for the cohort report: tags, kernel class from tags and from pixels, noise, NPS.

:func:`scan_signature` is the one function the cohort code asks; it is built on
:func:`~CTNormalizeLib.protocols.detect.detect_protocol` and
:func:`~CTNormalizeLib.protocols.noise.estimate_noise` (plus the NPS of
:mod:`CTNormalizeLib.evaluate.nps`) and can be replaced by a measured image-quality
signature without touching its callers.

Kernel class from pixels: the noise power spectrum of FBP noise is ``|f| W(f)^2`` with
``W`` the kernel's apodization (:func:`~CTNormalizeLib.protocols.kernel_mtf`), so each
kernel class predicts a mean NPS frequency at the scan's pixel size. The class whose
prediction is nearest (in log ratio) to the measured mean frequency is reported. It is a
coarse reading: iterative reconstruction and in-plane interpolation shift the NPS too.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Optional

import numpy as np

from ..protocols.kernels import KERNEL_CLASSES, kernel_mtf
from ..volume import Volume

#: Side of the NPS ROIs (mm), its bounds in pixels, and the smoothed-HU ranges of the ROIs.
NPS_ROI_MM = 18.0
NPS_ROI_PX = (16, 32)
AIR_RANGE = (-1100.0, -900.0)
TISSUE_RANGE = (-250.0, 250.0)
NPS_MAX_SLICES = 24


def _text(meta: dict, key: str) -> Optional[str]:
    v = meta.get(key)
    v = None if v is None else str(v).strip()
    return v or None


@lru_cache(maxsize=64)
def predicted_mean_frequency(kernel: str, pixel_mm: float, n_bins: int = 64) -> float:
    """Mean frequency (cycles/mm) of the radial FBP noise spectrum ``|f| W(f)^2`` up to Nyquist."""
    f = (np.arange(n_bins) + 0.5) * (0.5 / pixel_mm) / n_bins
    p = f * kernel_mtf(kernel, f) ** 2
    return float((f * p).sum() / p.sum())


def kernel_from_nps(mean_frequency: Optional[float], pixel_mm: float) -> Optional[str]:
    """The kernel class whose predicted NPS mean frequency is nearest the measured one."""
    if mean_frequency is None or not math.isfinite(mean_frequency) or mean_frequency <= 0:
        return None
    pixel = round(float(pixel_mm), 3)
    err = {k: abs(math.log(mean_frequency / predicted_mean_frequency(k, pixel))) for k in KERNEL_CLASSES}
    return min(err, key=err.get)


def measure_nps(volume: Volume, region: str = "air", max_slices: int = NPS_MAX_SLICES) -> Optional[dict]:
    """Radial NPS in uniform ROIs of up to ``max_slices`` evenly spread slices.

    ``region`` ``"air"`` takes ROIs in the air around the body (pure noise, the best
    reading of the kernel), ``"tissue"`` in uniform soft tissue (anatomy texture adds low
    frequencies). Returns :func:`~CTNormalizeLib.evaluate.nps.nps_of`'s dict plus ``region``,
    or None when fewer than two ROIs qualify.
    """
    from ..evaluate.nps import find_uniform_rois, nps_of

    pixel = math.sqrt(volume.spacing[1] * volume.spacing[2])
    roi = int(min(NPS_ROI_PX[1], max(NPS_ROI_PX[0], round(NPS_ROI_MM / pixel))))
    nz = volume.shape[0]
    idx = np.unique(np.linspace(0, nz - 1, min(nz, max_slices)).round().astype(int))
    sub = volume.hu[idx]
    hu_range = AIR_RANGE if region == "air" else TISSUE_RANGE
    corners = find_uniform_rois(sub, roi=roi, max_rois=64, max_std=25.0, hu_range=hu_range)
    if len(corners) < 2:
        return None
    return {**nps_of(sub, corners, volume.spacing[1:], roi=roi), "region": region}


def scan_signature(volume: Volume, nps: bool = True) -> dict:
    """What one scan looks like: scanner and kernel tags, kernel class (tags and pixels), noise.

    Parameters
    ----------
    volume : Volume
    nps : bool
        Also measure the NPS (and the kernel class from it); off for the fastest pass.

    Returns
    -------
    dict
        ``vendor``, ``model``, ``kernel_tag``, ``kernel_class_tag``, ``kernel_class_pixels``,
        ``thickness_mm`` (+ ``thickness_source``), ``spacing_z_mm``, ``pixel_mm``,
        ``noise_air_hu``, ``noise_tissue_hu``, ``dose_estimate`` and with ``nps``:
        ``nps_f``, ``nps``, ``nps_mean_frequency``, ``nps_noise_hu``, ``nps_region``. Unknown
        values are None.
    """
    from ..protocols.detect import detect_protocol
    from ..protocols.noise import estimate_noise

    meta = volume.meta
    finite = bool(np.all(np.isfinite(volume.hu)))
    noise = estimate_noise(volume) if finite else None
    proto = detect_protocol(volume, noise=noise, measure_noise=finite)
    ksrc = proto.sources.get("kernel")
    tsrc = proto.sources.get("thickness")
    sig = {
        "vendor": _text(meta, "Manufacturer"),
        "model": _text(meta, "ManufacturerModelName"),
        "kernel_tag": _text(meta, "ConvolutionKernel"),
        "kernel_class_tag": proto.kernel if ksrc is not None and ksrc.source == "tag" else None,
        "kernel_class_pixels": None,
        "thickness_mm": proto.thickness,
        "thickness_source": tsrc.source if tsrc is not None else None,
        "spacing_z_mm": float(volume.spacing[0]),
        "pixel_mm": float(math.sqrt(volume.spacing[1] * volume.spacing[2])),
        "noise_air_hu": noise.air_std if noise is not None else None,
        "noise_tissue_hu": noise.tissue_std if noise is not None else None,
        "dose_estimate": proto.dose,
        "shape": list(volume.shape),
    }
    if nps and finite:
        # Clipped air (a scanner's -1024 floor) truncates the noise: use tissue then.
        m = measure_nps(volume, "air") if noise is not None and noise.air_usable else None
        if m is None:
            m = measure_nps(volume, "tissue")
        if m is not None:
            sig.update(nps_f=m["f"], nps=m["nps"], nps_mean_frequency=m["mean_frequency"],
                       nps_noise_hu=m["noise_std"], nps_region=m["region"])
            sig["kernel_class_pixels"] = kernel_from_nps(m["mean_frequency"], sig["pixel_mm"])
    return sig
