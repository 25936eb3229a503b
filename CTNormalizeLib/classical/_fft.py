"""Per-slice 2D frequency-domain filtering, chunked over slices."""

from __future__ import annotations

import numpy as np


def radial_frequency(shape_yx, spacing_yx) -> np.ndarray:
    """|f| in cycles/mm on the ``rfft2`` grid of an image of ``shape_yx`` with pixel ``spacing_yx`` (mm)."""
    fy = np.fft.fftfreq(int(shape_yx[0]), d=float(spacing_yx[0]))
    fx = np.fft.rfftfreq(int(shape_yx[1]), d=float(spacing_yx[1]))
    return np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def pad_width(n: int, pad: int) -> int:
    from scipy.fft import next_fast_len

    return next_fast_len(n + 2 * pad, real=True) - n


def filter_slices(hu: np.ndarray, spacing_yx, transfer, pad: int = 16, chunk: int = 8,
                  progress=None, stage: str = "filter") -> np.ndarray:
    """Apply a radial 2D transfer function to every axial slice.

    Parameters
    ----------
    hu : np.ndarray
        ``[z, y, x]`` volume (not modified).
    spacing_yx : tuple of float
        In-plane pixel spacing (mm).
    transfer : callable
        ``transfer(f) -> H`` with ``f`` the radial frequency (cycles/mm) on the padded
        ``rfft2`` grid; ``H`` real, same shape.
    pad : int
        Reflect padding (pixels) on each side against wrap-around at the image border.
    chunk : int
        Slices per FFT batch (memory, progress and cancellation granularity).
    """
    from scipy import fft as sfft

    hu = np.asarray(hu, dtype=np.float32)
    nz, ny, nx = hu.shape
    py, px = pad_width(ny, pad), pad_width(nx, pad)
    ly, lx = py // 2, px // 2
    shape = (ny + py, nx + px)
    h = np.asarray(transfer(radial_frequency(shape, spacing_yx)), dtype=np.float32)
    out = np.empty_like(hu)
    for z0 in range(0, nz, chunk):
        z1 = min(nz, z0 + chunk)
        block = np.pad(hu[z0:z1], ((0, 0), (ly, py - ly), (lx, px - lx)), mode="reflect")
        spec = sfft.rfft2(block, axes=(1, 2), workers=-1)
        spec *= h
        res = sfft.irfft2(spec, s=shape, axes=(1, 2), workers=-1)
        out[z0:z1] = res[:, ly:ly + ny, lx:lx + nx]
        if progress is not None:
            progress(stage, z1 / nz)
    return out
