"""Domain-randomized scanner physics for training: filters, photon counts, electronic noise, AEC.

A model trained on four kernel curves and one photon-count scale learns those, not CT.
Each training scan here draws its reconstruction filter from a continuous family
(:class:`~CTNormalizeLib.signature.Transfer`: any roll-off frequency, steepness and
edge enhancement) or from the classic FBP windows (ramp, Shepp-Logan, cosine, Hamming,
Hann) cut off anywhere between 60 and 100 % of the detector's Nyquist, optionally with
the blur of linear-interpolation back-projection; its dose over 2.6 decades (down to noise far above clinical low-dose scans); its
electronic noise and tube-current modulation. The models are conditioned on what the
pixels show (the measured signature), never on these draws.

The independent simulator the benchmark uses for held-out physics
(:mod:`CTNormalizeLib.evaluate.independent_sim`) shares nothing with this module.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from ..signature.transfer import Transfer

CLASSIC_WINDOWS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")
DOSE_RANGE = (0.005, 2.0)  # relative to the simulator's full dose (a high dose): 2.6 decades
ELECTRONIC_RANGE = (0.0, 30.0)  # counts per bin


def classic_window(name: str, u: np.ndarray) -> np.ndarray:
    """A classic FBP apodization at ``u = f / f_cut`` (0 beyond the cut-off)."""
    u = np.abs(np.asarray(u, dtype=np.float64))
    inside = u < 1.0
    if name == "ramp":
        w = np.ones_like(u)
    elif name == "shepp-logan":
        w = np.sinc(u / 2.0)
    elif name == "cosine":
        w = np.cos(np.pi * u / 2.0)
    elif name == "hamming":
        w = 0.54 + 0.46 * np.cos(np.pi * u)
    elif name == "hann":
        w = 0.5 + 0.5 * np.cos(np.pi * u)
    else:
        raise ValueError(f"unknown window {name!r}; known: {CLASSIC_WINDOWS}")
    return np.where(inside, w, 0.0)


@dataclass(frozen=True)
class RandomPhysics:
    """One draw of scanner physics (recorded with the training data)."""

    window: str  # "family" or one of CLASSIC_WINDOWS
    f50: float = 0.4
    p: float = 2.0
    boost: float = 0.0
    cutoff: float = 1.0  # classic windows: fraction of the detector Nyquist where they end
    interp_blur: bool = False
    dose: float = 1.0
    electronic_std: float = 6.0
    aec_strength: float = 1.0

    def transfer(self, detector_mm: float):
        """``f -> W(f)`` (cycles/mm) for a detector of bin width ``detector_mm``."""
        f_nyq = 0.5 / detector_mm

        def w(f):
            f = np.abs(np.asarray(f, dtype=np.float64))
            if self.window == "family":
                out = Transfer(self.f50, self.p, self.boost)(f)
            else:
                out = classic_window(self.window, f / (self.cutoff * f_nyq))
            if self.interp_blur:
                out = out * np.sinc(f * detector_mm) ** 2
            return out
        return w

    def detector(self, base):
        """``base`` (a :class:`~.scanner.ScannerConfig`) with this draw's noise settings."""
        return replace(base, electronic_std=float(self.electronic_std), aec_strength=float(self.aec_strength))

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def draw_physics(rng: np.random.Generator) -> RandomPhysics:
    """A random scanner: filter, dose (log-uniform over two decades), electronic noise, AEC."""
    dose = float(math.exp(rng.uniform(math.log(DOSE_RANGE[0]), math.log(DOSE_RANGE[1]))))
    common = dict(dose=dose, electronic_std=float(rng.uniform(*ELECTRONIC_RANGE)),
                  aec_strength=float(rng.choice([0.0, 0.5, 1.0])), interp_blur=bool(rng.random() < 0.4))
    if rng.random() < 0.5:
        return RandomPhysics("family", f50=float(math.exp(rng.uniform(math.log(0.22), math.log(1.1)))),
                             p=float(rng.uniform(1.5, 6.0)), boost=float(rng.uniform(0.0, 0.6) if rng.random() < 0.5 else 0.0),
                             **common)
    return RandomPhysics(str(rng.choice(CLASSIC_WINDOWS)), cutoff=float(rng.uniform(0.6, 1.0)), **common)


def draw_target_transfer(rng: np.random.Generator) -> tuple[str, Transfer]:
    """A target kernel: one of the engine's classes (60 %) or a random member of the family."""
    from ..protocols import KERNEL_CLASSES
    from ..signature.kernel_class import class_transfer

    if rng.random() < 0.6:
        k = str(rng.choice(KERNEL_CLASSES))
        return k, class_transfer(k)
    t = Transfer(float(math.exp(rng.uniform(math.log(0.25), math.log(0.9)))), float(rng.uniform(1.6, 4.0)),
                 float(rng.uniform(0.0, 0.4) if rng.random() < 0.4 else 0.0))
    return "random", t
