"""Noise standard deviation (HU) per region: air outside the body, fat, muscle, lung.

Each region's noise is the robust (MAD) std of a high-pass residual (voxel minus its
in-plane local mean), so smooth anatomy does not inflate it. The residual sees only the
part of the noise above the local-mean window's cut-off; knowing the noise power
spectrum's shape (the fitted kernel), the full std is recovered by dividing by the
fraction of the noise power that passes (:func:`highpass_fraction`). The result is the
std a radiologist would read in a uniform ROI, in HU, whatever the kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Optional

import numpy as np
from scipy import ndimage as ndi
from scipy.stats import median_abs_deviation

from .regions import SliceRegions
from .transfer import Transfer

MIN_VOXELS = 300
REGIONS = ("air", "fat", "muscle", "lung", "soft")


@dataclass
class RegionNoise:
    """High-pass residual std per region (HU), before and after the band correction."""

    residual_std: dict
    voxels: dict
    std: dict = field(default_factory=dict)
    window: int = 5
    clipped_air: int = 0

    def tissue(self, values: Optional[dict] = None) -> Optional[float]:
        """Voxel-weighted fat+muscle value of ``values`` (default: corrected stds)."""
        vals = self.std if values is None else values
        parts = [(vals[r], self.voxels[r]) for r in ("fat", "muscle") if vals.get(r) is not None]
        if not parts:
            return None
        return float(sum(s * n for s, n in parts) / sum(n for _, n in parts))

    @property
    def tissue_voxels(self) -> int:
        return sum(self.voxels[r] for r in ("fat", "muscle") if self.residual_std.get(r) is not None)


def residual_noise(hu: np.ndarray, regions: list[SliceRegions]) -> RegionNoise:
    """Robust std of the high-pass residual in each region of ``regions``."""
    window = regions[0].window if regions else 5
    # white noise: var(x - mean_k(x)) = var(x) (1 - 1/k^2); undo that factor
    scale = 1.0 / math.sqrt(1.0 - 1.0 / window ** 2)
    chunks = {r: [] for r in REGIONS}
    clipped = 0
    for r in regions:
        x = hu[r.z].astype(np.float32)
        resid = (x - ndi.uniform_filter(x, window, mode="nearest")) * scale
        for name in REGIONS:
            m = getattr(r, name)
            if m.any():
                chunks[name].append(resid[m])
        clipped += r.clipped_air
    std, vox = {}, {}
    for name, parts in chunks.items():
        vals = np.concatenate(parts) if parts else np.empty(0, np.float32)
        vox[name] = int(vals.size)
        std[name] = float(median_abs_deviation(vals, scale="normal")) if vals.size >= MIN_VOXELS else None
    return RegionNoise(std, vox, window=window, clipped_air=clipped)


@lru_cache(maxsize=512)
def _highpass_fraction(f50: float, p: float, boost: float, pixel_mm: float, window: int) -> float:
    n = 128
    f = np.fft.fftfreq(n, d=pixel_mm)
    fx, fy = np.meshgrid(f, f)
    fr = np.hypot(fx, fy)
    nps = fr * Transfer(f50, p, boost)(fr) ** 2

    def box(fq):
        x = np.pi * fq * pixel_mm
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.sin(window * x) / (window * np.sin(x))
        return np.where(np.abs(x) < 1e-9, 1.0, out)

    h = 1.0 - box(fx) * box(fy)
    passed = float(np.sum(nps * h ** 2)) / (1.0 - 1.0 / window ** 2)
    return passed / max(float(np.sum(nps)), 1e-12)


def highpass_fraction(transfer: Transfer, pixel_mm: float, window: int) -> float:
    """Fraction of FBP noise power (``|f| W^2``) that the residual estimator keeps."""
    return _highpass_fraction(round(transfer.f50, 4), round(transfer.p, 3), round(transfer.boost, 3),
                              round(float(pixel_mm), 4), int(window))


def corrected(noise: RegionNoise, transfer: Transfer, pixel_mm: float) -> RegionNoise:
    """``noise`` with ``std`` filled: residual std divided by sqrt(high-pass fraction)."""
    k = 1.0 / math.sqrt(max(highpass_fraction(transfer, pixel_mm, noise.window), 1e-6))
    noise.std = {r: (None if s is None else float(s * k)) for r, s in noise.residual_std.items()}
    return noise
