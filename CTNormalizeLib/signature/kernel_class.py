"""Kernel class from a transfer function: the class whose nominal MTF is closest in the measured band."""

from __future__ import annotations

import math

import numpy as np

from ..protocols.kernels import KERNEL_CLASSES, KERNEL_MTF
from .transfer import Transfer


def class_transfer(kernel_class: str) -> Transfer:
    """The nominal :class:`Transfer` of a kernel class (the simulator's and MTF ratio's curve)."""
    p = KERNEL_MTF[kernel_class]
    return Transfer(p.f50, 2.0, p.boost)


def as_transfer(kernel) -> Transfer:
    """A :class:`Transfer` from a transfer, a kernel class or a vendor kernel name."""
    if isinstance(kernel, Transfer):
        return kernel
    from ..protocols.kernels import kernel_class

    return class_transfer(kernel_class(str(kernel)))


def classify_transfer(transfer: Transfer, nyquist: float) -> tuple[str, float, dict]:
    """The kernel class closest to ``transfer`` up to ``nyquist`` (cycles/mm).

    Distance is the RMS difference of the two curves over 0.05 c/mm .. min(Nyquist, 1.2);
    what the image cannot show (beyond Nyquist) does not count.

    Returns
    -------
    (class, confidence, distances)
        Confidence is ``1 - d_best / d_second`` (0 = a tie between two classes).
    """
    f = np.linspace(0.05, min(float(nyquist), 1.2), 64)
    w = transfer(f)
    dist = {k: float(np.sqrt(np.mean((class_transfer(k)(f) - w) ** 2))) for k in KERNEL_CLASSES}
    ranked = sorted(dist, key=dist.get)
    best, second = dist[ranked[0]], dist[ranked[1]]
    conf = 1.0 - best / second if second > 0 else 1.0
    return ranked[0], float(round(max(0.0, min(1.0, conf)), 3)), {k: round(v, 4) for k, v in dist.items()}


def describe_sharpness(transfer: Transfer, nyquist: float) -> str:
    """A short phrase for messages: ``"MTF50 0.42 c/mm"`` or ``"MTF50 above Nyquist (0.71 c/mm)"``."""
    m = transfer.mtf50
    if not math.isfinite(m) or m > nyquist:
        return f"MTF50 above Nyquist ({nyquist:.2f} c/mm)"
    return f"MTF50 {m:.2f} c/mm"
