"""Torch versions of the pipeline's array operations, for volumes that stay on a device.

Each mirrors a numpy/scipy operation of the CPU pipeline with the same definition
(scipy's Gaussian kernels and boundary modes, the shared z grid weights, the same
front-end transfer on the same padded grid), computed in float32 on whatever device the
tensors live on. scipy accumulates its filters in float64, so figures agree to float32
rounding, not bit for bit. Tensors are ``[z, y, x]`` unless said otherwise.
"""

from __future__ import annotations

import math

import numpy as np

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def gaussian_weights(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage's 1D Gaussian kernel (radius ``int(truncate * sigma + 0.5)``, sums to 1)."""
    r = int(truncate * float(sigma) + 0.5)
    x = np.arange(-r, r + 1, dtype=np.float64)
    phi = np.exp(-0.5 / float(sigma) ** 2 * x * x)
    return phi / phi.sum()


def padded_index(n: int, r: int, mode: str) -> np.ndarray:
    """Source indices of an axis of length ``n`` padded by ``r`` on each side, in scipy's ``mode``.

    ``reflect``: half-sample symmetric (d c b a | a b c d | d c b a); ``nearest``: the edge
    value repeated; ``mirror``: whole-sample symmetric (d c b | a b c d | c b a).
    """
    i = np.arange(-r, n + r)
    if mode == "nearest":
        return np.clip(i, 0, n - 1)
    if mode == "reflect":
        period = 2 * n
        i = np.mod(i, period)
        return np.where(i < n, i, period - 1 - i)
    if mode == "mirror":
        if n == 1:
            return np.zeros_like(i)
        period = 2 * n - 2
        i = np.mod(i, period)
        return np.where(i < n, i, period - i)
    raise ValueError(f"unknown boundary mode {mode!r}")


def gaussian_inplane(x, sigma: float, mode: str = "reflect"):
    """``scipy.ndimage.gaussian_filter(x, (0, sigma, sigma), mode=mode)`` for ``x [n, y, x]`` (float32)."""
    import torch
    import torch.nn.functional as F

    w = torch.as_tensor(gaussian_weights(sigma), dtype=torch.float32, device=x.device)
    r = (w.numel() - 1) // 2
    n, ny, nx = x.shape
    iy = torch.as_tensor(padded_index(ny, r, mode), device=x.device)
    ix = torch.as_tensor(padded_index(nx, r, mode), device=x.device)
    t = x.float()[:, None]
    t = F.conv2d(t.index_select(2, iy), w.view(1, 1, -1, 1))
    t = F.conv2d(t.index_select(3, ix), w.view(1, 1, 1, -1))
    return t[:, 0]


def gaussian_z(x, sigma: float):
    """``scipy.ndimage.gaussian_filter1d(x, sigma, axis=0, mode="nearest")`` (float32)."""
    import torch

    w = gaussian_weights(sigma)
    r = (len(w) - 1) // 2
    n = x.shape[0]
    idx = torch.as_tensor(padded_index(n, r, "nearest"), device=x.device)
    out = torch.zeros_like(x, dtype=torch.float32)
    for k, wk in enumerate(w):
        out.add_(x.index_select(0, idx[k:k + n]), alpha=float(wk))
    return out


def linear_z_plan(z_from, z_to) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(i0, i1, w0, w1)``: output slice ``k`` is ``w0[k] x[i0[k]] + w1[k] x[i1[k]]`` (the shared linear weights)."""
    from ..imaging.zgrid import interpolation_weights

    W = interpolation_weights(z_from, z_to, order=1).astype(np.float32)
    n_out = W.shape[0]
    i0 = np.zeros(n_out, np.int64)
    i1 = np.zeros(n_out, np.int64)
    w0 = np.zeros(n_out, np.float32)
    w1 = np.zeros(n_out, np.float32)
    for k in range(n_out):
        nz = np.flatnonzero(W[k])
        if len(nz) == 0:
            continue
        i0[k], w0[k] = nz[0], W[k, nz[0]]
        i1[k], w1[k] = (nz[1], W[k, nz[1]]) if len(nz) > 1 else (nz[0], 0.0)
    return i0, i1, w0, w1


def resample_z(x, src_spacing: float, tgt_spacing: float, src_thickness=None, tgt_thickness=None):
    """:func:`CTNormalizeLib.inference.zgrid.resample_z` on a tensor (the input itself when nothing changes)."""
    import torch

    from ..imaging.zgrid import grid_positions

    src_t = src_thickness or src_spacing
    tgt_t = tgt_thickness or tgt_spacing
    out = x
    if tgt_t > src_t * 1.02:
        out = gaussian_z(x, math.sqrt(tgt_t ** 2 - src_t ** 2) * FWHM_TO_SIGMA / src_spacing)
    if abs(tgt_spacing - src_spacing) <= 1e-3 * src_spacing:
        return out
    n = x.shape[0]
    i0, i1, w0, w1 = linear_z_plan(np.arange(n) * float(src_spacing), grid_positions(n, src_spacing, tgt_spacing))
    dev = x.device
    a = out.index_select(0, torch.as_tensor(i0, device=dev)) * torch.as_tensor(w0, device=dev)[:, None, None]
    a.addcmul_(out.index_select(0, torch.as_tensor(i1, device=dev)), torch.as_tensor(w1, device=dev)[:, None, None])
    return a


def frontend_filter(x, spacing_yx, source_kernel, target_kernel, lam: float, pad: int = 16, chunk: int = 64):
    """The MTF-ratio front-end (:func:`CTNormalizeLib.classical.mtf_ratio.convert_kernel`) on a tensor.

    The same transfer on the same reflect-padded FFT grid as the CPU's ``filter_slices``,
    in chunks of ``chunk`` slices (cuFFT work space).
    """
    import torch
    import torch.nn.functional as F

    from ..classical._fft import pad_width, radial_frequency
    from ..classical.mtf_ratio import mtf_ratio_transfer

    n, ny, nx = x.shape
    py, px = pad_width(ny, pad), pad_width(nx, pad)
    ly, lx = py // 2, px // 2
    shape = (ny + py, nx + px)
    h = mtf_ratio_transfer(source_kernel, target_kernel, lam)(radial_frequency(shape, spacing_yx))
    h = torch.as_tensor(np.asarray(h, np.float32), device=x.device)
    out = torch.empty_like(x)
    for z0 in range(0, n, chunk):
        block = F.pad(x[z0:z0 + chunk, None], (lx, px - lx, ly, py - ly), mode="reflect")[:, 0]
        spec = torch.fft.rfft2(block)
        spec *= h
        out[z0:z0 + chunk] = torch.fft.irfft2(spec, s=shape)[:, ly:ly + ny, lx:lx + nx]
    return out


def soft_mask(mask, sigma: float = 2.0):
    """:func:`CTNormalizeLib.inference.masks.soft_mask` on a tensor (float32 0..1, below 1 % cut to 0)."""
    soft = gaussian_inplane(mask.float(), sigma).clamp_(0.0, 1.0)
    soft[soft < 0.01] = 0.0
    return soft


def window_weight(hu_smooth, lo: float, hi: float, ramp: float = 150.0):
    """:func:`CTNormalizeLib.inference.masks.window_weight` on a tensor."""
    a = ((hu_smooth - (lo - ramp)) / ramp).clamp_(0, 1)
    b = (((hi + ramp) - hu_smooth) / ramp).clamp_(0, 1)
    return torch_minimum(a, b)


def torch_minimum(a, b):
    import torch

    return torch.minimum(a, b)


def median(values):
    """numpy's median of a 1D float32 tensor (the mean of the two middle values when even), as a float."""
    import torch

    n = values.numel()
    if n % 2:
        return float(torch.kthvalue(values, n // 2 + 1).values)
    s = torch.kthvalue(values, n // 2).values
    t = torch.kthvalue(values, n // 2 + 1).values
    return float((s + t) / 2)
