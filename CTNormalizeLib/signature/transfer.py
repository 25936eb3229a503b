"""In-plane transfer functions: one smooth parametric family for every kernel, nominal or measured.

``W(f) = exp(-ln2 (f/f50)^p) * (1 + b (f/f50)^2 exp(1 - (f/f50)^2))``, f in cycles/mm:
a roll-off with 50 % near ``f50`` whose steepness is ``p`` (2 = Gaussian), and a
mid-frequency lift ``b`` (edge enhancement). The engine's four kernel classes are members
(``p = 2``), and so, within a few per cent up to Nyquist, are the classic FBP filters
(ramp, Shepp-Logan, cosine, Hamming, Hann) with or without the blur of linear
interpolation in back-projection. One family means a measured source and a nominal
target (or two measured scans) can always be compared and divided.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

LN2 = math.log(2.0)


@dataclass(frozen=True)
class Transfer:
    """Parameters of the transfer family (see the module docstring)."""

    f50: float
    p: float = 2.0
    boost: float = 0.0

    def __call__(self, f) -> np.ndarray:
        r = np.abs(np.asarray(f, dtype=np.float64)) / self.f50
        return np.exp(-LN2 * r ** self.p) * (1.0 + self.boost * r * r * np.exp(1.0 - r * r))

    def mtf_at(self, level: float, fmax: float = 3.0) -> float:
        """First frequency (cycles/mm) where W falls below ``level``; ``inf`` if not below ``fmax``."""
        f = np.linspace(0.0, fmax, 6001)
        below = self(f) < level
        return float(f[np.argmax(below)]) if below.any() else math.inf

    @property
    def mtf50(self) -> float:
        return self.mtf_at(0.5)

    @property
    def mtf10(self) -> float:
        return self.mtf_at(0.1)

    def to_dict(self) -> dict:
        d = {k: round(float(v), 5) for k, v in asdict(self).items()}
        d["mtf50"] = round(self.mtf50, 4) if math.isfinite(self.mtf50) else None
        d["mtf10"] = round(self.mtf10, 4) if math.isfinite(self.mtf10) else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Transfer":
        return cls(float(d["f50"]), float(d.get("p", 2.0)), float(d.get("boost", 0.0)))


def band_noise_factor(w: Transfer, pixel_mm: float, n: int = 128) -> float:
    """Relative FBP noise std through transfer ``w`` on a ``pixel_mm`` grid: ``sqrt(sum |f| W(f)^2)``.

    Only ratios between transfers (or pixel sizes) are meaningful: the noise std of a
    scan changes by ``band_noise_factor(w2, p) / band_noise_factor(w1, p)`` when its
    kernel changes from ``w1`` to ``w2`` at the same dose.
    """
    return float(math.sqrt(np.sum(fbp_nps(w, pixel_mm, n)) / (n * pixel_mm) ** 2))


def fbp_nps(w: Transfer, pixel_mm: float, n: int = 128) -> np.ndarray:
    """The FBP noise model ``|f| W(f)^2`` on an ``n x n`` 2D frequency grid (``np.fft`` order, unscaled)."""
    f = np.fft.fftfreq(n, d=pixel_mm)
    fr = np.hypot(*np.meshgrid(f, f))
    return fr * w(fr) ** 2
