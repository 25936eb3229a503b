"""BM4D with a correlated-noise PSD: an optional benchmark baseline, never an engine dependency.

The ``bm4d`` package (PyPI; Tampere University, **non-commercial licence**) is the
strongest classical denoiser for correlated noise and CTNorm's baseline. It is installed
only for benchmarks (``pip install ctnormalize[bench]``); nothing in the engine imports it.

BM4D takes the noise power spectrum as a PSD array of the volume's shape, in its own
convention: ``PSD = E|fftn(noise)|^2`` (unshifted), so white noise of variance ``s^2``
has ``PSD = s^2 * N`` everywhere. :func:`bm4d_psd` builds that from a 2D in-plane NPS in
HU^2 mm^2 (IEC convention, integrating to the variance), assuming noise independent
between slices (true for contiguous FBP slices of a few mm, approximate for thin ones).

Where the 2D NPS comes from is a function argument (``nps_fn(hu, spacing) ->
(nps2d_fftshifted, (dy, dx))``), so the engine's signature NPS can be plugged in. Until
then :func:`uniform_roi_nps` is a simple stand-in measured on the image itself with
``evaluate.nps``: the NPS shape of air ROIs outside the body, scaled to the
high-frequency power of the most uniform soft-tissue ROIs. It assumes one noise texture
everywhere (FBP noise is not stationary: streaks along the long axis of the body are
ignored).

BM4D only denoises. The benchmark providers (``benchmark_methods.bm4d_methods``, at the
composition level because they run ``normalize``) are ``bm4d`` and ``bm4d+mtf_ratio``: BM4D
and then the engine's ``mtf_ratio`` method, planned on the scan as acquired (so the kernel
step sees the source's transfer, not the denoised image's), the chain CTNorm's baseline uses.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Optional

import numpy as np

from ..errors import BadInputError
from ..volume import Volume

NPSFn = Callable[[np.ndarray, tuple], tuple]


def available() -> bool:
    """Whether the optional ``bm4d`` package is importable."""
    try:
        import bm4d  # noqa: F401
    except ImportError:
        return False
    return True


def uniform_roi_nps(hu: np.ndarray, spacing, roi_sizes=(32, 24, 16), min_rois: int = 4,
                    high_band: float = 1 / 3) -> tuple:
    """A simple in-plane NPS of a volume from its own uniform regions.

    Soft-tissue "uniform" ROIs of a patient still hold anatomy at low frequencies, while
    air outside the body holds only noise but less of it (shorter paths). So the shape
    comes from air ROIs and the level from tissue ROIs: the air NPS is scaled to the
    tissue NPS's power above ``high_band`` x Nyquist, where anatomy contributes little.
    Without enough air ROIs the tissue NPS is used as it is; without tissue ROIs, the air
    NPS. ROIs: ``evaluate.nps.find_uniform_rois`` of the largest size that finds ``min_rois``.

    Returns
    -------
    (nps2d, (dy, dx))
        fftshifted 2D NPS (HU^2 mm^2) on a ``roi x roi`` grid, and its pixel spacing.
    """
    from scipy import ndimage as ndi

    from ..imaging import body_mask
    from .nps import extract_rois, find_uniform_rois, nps_2d

    hu = np.asarray(hu, dtype=np.float32)
    pix = (float(spacing[1]), float(spacing[2]))
    body = body_mask(hu)
    outside = ~ndi.binary_dilation(body, np.ones((1, 7, 7), bool))
    for roi in roi_sizes:
        tissue = find_uniform_rois(hu, roi=roi, mask=body)
        air = find_uniform_rois(hu, roi=roi, mask=outside, hu_range=(-1100.0, -900.0), max_std=40.0)
        if len(tissue) < min_rois and len(air) < min_rois:
            continue
        n_t = nps_2d(extract_rois(hu, tissue, roi), pix)[0] if len(tissue) >= min_rois else None
        n_a = nps_2d(extract_rois(hu, air, roi), pix)[0] if len(air) >= min_rois else None
        if n_a is None or n_t is None:
            return (n_t if n_a is None else n_a), pix
        fy = np.fft.fftshift(np.fft.fftfreq(roi, pix[0]))
        fx = np.fft.fftshift(np.fft.fftfreq(roi, pix[1]))
        band = np.hypot(*np.meshgrid(fy * pix[0], fx * pix[1], indexing="ij")) > 0.5 * high_band
        scale = n_t[band].sum() / max(n_a[band].sum(), 1e-12)
        return n_a * scale, pix
    raise BadInputError("No uniform regions (soft tissue or air) to measure the noise power spectrum in.")


def bm4d_psd(nps2d: np.ndarray, nps_spacing, shape, spacing) -> np.ndarray:
    """BM4D's PSD for a ``[z, y, x]`` volume, returned in BM4D's axis order ``[y, x, z]``.

    The 2D NPS (fftshifted, HU^2 mm^2, sampled at ``nps_spacing``) is interpolated
    bilinearly onto the volume's in-plane FFT frequencies and taken as white along z.
    """
    from scipy.interpolate import RegularGridInterpolator

    nz, ny, nx = shape
    dy, dx = float(spacing[1]), float(spacing[2])
    ry, rx = nps2d.shape
    fy = np.fft.fftshift(np.fft.fftfreq(ry, float(nps_spacing[0])))
    fx = np.fft.fftshift(np.fft.fftfreq(rx, float(nps_spacing[1])))
    interp = RegularGridInterpolator((fy, fx), np.clip(nps2d, 0, None), bounds_error=False, fill_value=None)
    qy, qx = np.meshgrid(np.fft.fftfreq(ny, dy), np.fft.fftfreq(nx, dx), indexing="ij")
    q = np.stack([np.clip(qy, fy[0], fy[-1]), np.clip(qx, fx[0], fx[-1])], axis=-1)
    plane = np.clip(interp(q), 0, None) / (dy * dx) * (ny * nx * nz)
    return np.repeat(plane[:, :, None], nz, axis=2).astype(np.float32)


_memo: dict = {}


def bm4d_denoise(volume: Volume, nps_fn: Optional[NPSFn] = None, profile: str = "np") -> Volume:
    """Denoise a volume with BM4D and the PSD of its measured NPS.

    Parameters
    ----------
    volume : Volume
    nps_fn : callable, optional
        ``nps_fn(hu, spacing) -> (nps2d_fftshifted, (dy, dx))``; default :func:`uniform_roi_nps`.
    profile : str
        BM4D profile (``"np"`` = the authors' default).
    """
    try:
        import bm4d
    except ImportError as exc:
        raise BadInputError("BM4D is an optional benchmark baseline: pip install bm4d "
                            "(non-commercial licence).") from exc
    if not hasattr(np, "trapz"):  # bm4d 4.2.5 estimates PSD parameters with np.trapz, removed in numpy 2.4
        np.trapz = np.trapezoid
    hu = np.asarray(volume.hu, dtype=np.float32)
    nps_fn = nps_fn or uniform_roi_nps
    key = (hashlib.sha1(hu.tobytes()).hexdigest(), tuple(volume.spacing), id(nps_fn), profile)
    if key not in _memo:  # bm4d and bm4d+mtf_ratio on the same source denoise once
        nps2d, nsp = nps_fn(hu, volume.spacing)
        psd = bm4d_psd(np.asarray(nps2d, float), nsp, hu.shape, volume.spacing)
        out = bm4d.bm4d(np.transpose(hu, (1, 2, 0)), psd, profile=profile)
        _memo.clear()
        _memo[key] = np.transpose(np.asarray(out, np.float32).reshape(hu.shape[1], hu.shape[2], hu.shape[0]),
                                  (2, 0, 1))
    return volume.with_array(_memo[key].copy())
