"""Kernel conversion by the ratio of kernel MTFs, ``H(f) = MTF_target(f) / MTF_source(f)``.

Both MTFs come from :func:`CTNormalizeLib.protocols.kernel_mtf`, the same curves the
simulator's FBP apodization uses. Where the ratio exceeds 1 (sharpening) the division
would amplify noise without bound where the source MTF is small, so there the filter is
Wiener-regularized: ``H = max(1, M_t M_s / (M_s^2 + lambda))`` with
``lambda = (noise_std / signal_scale)^2``.
"""

from __future__ import annotations

import numpy as np

from ..protocols import kernel_class, kernel_mtf
from ._fft import filter_slices

SIGNAL_SCALE_HU = 100.0  # typical structure contrast the Wiener prior assumes
MIN_LAMBDA = 1e-3


def wiener_lambda(noise_std: float | None, signal_scale: float = SIGNAL_SCALE_HU) -> float:
    """Regularization ``lambda`` from the image noise (HU std): ``(noise/signal_scale)^2``, at least 1e-3."""
    if noise_std is None or not np.isfinite(noise_std):
        noise_std = 20.0
    return float(max(MIN_LAMBDA, (float(noise_std) / signal_scale) ** 2))


def mtf_ratio_transfer(source_kernel: str, target_kernel: str, lam: float = 0.04):
    """The radial transfer function ``f -> H(f)`` (f in cycles/mm) converting source to target kernel.

    ``H = M_t/M_s`` where that is <= 1, and ``max(1, M_t M_s/(M_s^2+lam))`` where the
    plain ratio would exceed 1, so H is continuous and never amplifies beyond what the
    Wiener estimate supports.
    """
    src, tgt = kernel_class(source_kernel), kernel_class(target_kernel)

    def transfer(f):
        ms = kernel_mtf(src, f)
        mt = kernel_mtf(tgt, f)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(ms > 1e-12, mt / np.maximum(ms, 1e-12), 0.0)
        wiener = np.maximum(1.0, mt * ms / (ms * ms + lam))
        return np.where(ratio <= 1.0, ratio, np.minimum(ratio, wiener))

    return transfer


def convert_kernel(hu: np.ndarray, spacing, source_kernel: str, target_kernel: str,
                   noise_std: float | None = None, lam: float | None = None, chunk: int = 8,
                   progress=None) -> np.ndarray:
    """Convert the reconstruction kernel of a volume slice by slice.

    Parameters
    ----------
    hu : np.ndarray
        ``[z, y, x]`` HU (not modified).
    spacing : tuple of float
        ``(z, y, x)`` mm; the in-plane pair sets the frequency axis.
    source_kernel, target_kernel : str
        Kernel classes or vendor names.
    noise_std : float, optional
        Image noise (HU) for the Wiener term; ignored when ``lam`` is given.
    lam : float, optional
        Wiener regularization; default from ``noise_std`` (:func:`wiener_lambda`).
    chunk : int
        Slices per FFT batch.
    progress : callable, optional
        ``progress("mtf_ratio", fraction)``.

    Returns
    -------
    np.ndarray
        float32 ``[z, y, x]``.
    """
    if lam is None:
        lam = wiener_lambda(noise_std)
    transfer = mtf_ratio_transfer(source_kernel, target_kernel, lam)
    return filter_slices(hu, spacing[-2:], transfer, chunk=chunk, progress=progress, stage="mtf_ratio")
