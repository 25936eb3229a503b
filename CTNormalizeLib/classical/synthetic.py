"""A tiny image-domain scan model for tests and benchmarks of the classical methods.

Not the project's physics simulator (``CTNormalizeLib.simulate``, projection + FBP):
this one applies the same kernel MTFs in the image domain, adds noise shaped like FBP
noise (power ~ |f| MTF^2, std ~ 1/sqrt(dose)) and a Gaussian slice profile. It is
cheap, so unit tests and the speed benchmark do not depend on the simulator.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..protocols import kernel_mtf
from ._fft import filter_slices, radial_frequency
from .thickness import FWHM_TO_SIGMA, change_thickness

FULL_DOSE_NOISE_STANDARD = 15.0  # HU std of a standard-kernel, full-dose, thickness-equal-to-spacing scan


def disk_phantom(shape=(32, 128, 128), spacing=(0.5, 0.7, 0.7), seed: int = 0) -> np.ndarray:
    """Chest-like truth: air, a body ellipse (fat rim, muscle), two lungs with vessels and nodules."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    z, y, x = (np.arange(n, dtype=np.float32).reshape([-1 if i == k else 1 for i in range(3)]) * s
               for k, (n, s) in enumerate(zip(shape, spacing)))  # broadcast grids: memory of one volume
    cy, cx = ny * spacing[1] / 2, nx * spacing[2] / 2
    ry, rx = 0.40 * ny * spacing[1], 0.45 * nx * spacing[2]
    r = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2
    vol = np.full(shape, -1000.0, np.float32)
    full = lambda m: np.broadcast_to(m, shape)  # noqa: E731
    vol[full(r < 1.0)] = -100.0
    vol[full(r < 0.8)] = 40.0
    for side in (-1, 1):
        lr = ((y - cy) / (0.7 * ry)) ** 2 + ((x - cx - side * 0.42 * rx) / (0.33 * rx)) ** 2
        vol[full(lr < 1.0)] = -860.0
    lungs = vol < -800
    # vessels: random tubes (along z with drift) and nodules: random blobs, inside the lungs
    zz = z - z.mean()
    for _ in range(14):
        py, px = rng.uniform(0.2, 0.8) * ny * spacing[1], rng.uniform(0.1, 0.9) * nx * spacing[2]
        dy, dx = rng.normal(0, 0.3, 2)
        rad = rng.uniform(0.6, 2.0)
        d = (y - py - dy * zz) ** 2 + (x - px - dx * zz) ** 2
        vol[(d < rad**2) & lungs] = 40.0
    for _ in range(6):
        p = [rng.uniform(0.2, 0.8) * n * s for n, s in zip(shape, spacing)]
        rad = rng.uniform(1.5, 4.0)
        d = (z - p[0]) ** 2 + (y - p[1]) ** 2 + (x - p[2]) ** 2
        vol[(d < rad**2) & lungs] = rng.choice([-500.0, 30.0])
    vol += ndi.gaussian_filter(rng.normal(0, 25, shape), 1.0).astype(np.float32) * lungs
    return vol


def noise_transfer(kernel: str):
    """Amplitude transfer of FBP-like noise for ``kernel``: ``sqrt(|f|) * MTF(f)``."""
    return lambda f: np.sqrt(f) * kernel_mtf(kernel, f)


def scan(truth: np.ndarray, spacing, kernel: str, dose: float, thickness: float, z_spacing: float | None = None,
         seed: int = 0, full_dose_noise: float = FULL_DOSE_NOISE_STANDARD):
    """Image-domain "scan" of ``truth``: kernel MTF, shaped noise, Gaussian slice profile, z sampling.

    Returns
    -------
    hu : np.ndarray
        float32 ``[z, y, x]`` on the z grid of :func:`change_thickness`.
    spacing : tuple
        ``(z_spacing, y, x)``.
    """
    rng = np.random.default_rng(seed)
    img = filter_slices(truth, spacing[-2:], lambda f: kernel_mtf(kernel, f))
    white = rng.standard_normal(truth.shape).astype(np.float32)
    noise = filter_slices(white, spacing[-2:], noise_transfer(kernel), pad=0)
    # scale: standard kernel, full dose, 1 mm Gaussian slice profile -> std ``full_dose_noise``;
    # a Gaussian profile of sigma s voxels divides white-noise variance by 2 sqrt(pi) s.
    f = radial_frequency(truth.shape[-2:], spacing[-2:])
    ref = np.sqrt(np.mean(noise_transfer("standard")(f) ** 2))
    s1 = FWHM_TO_SIGMA * 1.0 / float(spacing[0])
    noise *= full_dose_noise / ref / np.sqrt(dose) * np.sqrt(2.0 * np.sqrt(np.pi) * s1)
    r = change_thickness(img + noise, spacing, 0.0, thickness, z_spacing or thickness)
    return r.hu, (r.z_spacing, float(spacing[1]), float(spacing[2]))
