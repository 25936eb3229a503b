"""Geometry of the phantom: the adult-chest frame, partial-volume edges, shapes and random fields.

Shapes are drawn as signed distances (mm, > 0 inside) turned into partial-volume
fractions over one voxel, so that edges carry the partial-volume blur of a real scan.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def soft(sdf, pix):
    """Partial-volume fraction of a voxel from a signed distance (mm, >0 inside)."""
    return np.clip(0.5 + sdf / pix, 0.0, 1.0).astype(np.float32)


def ellipse_sdf(U, V, cu, cv, a, b, rot=0.0, p=2.0):
    """Approximate signed distance (>0 inside) to a (super)ellipse, exact along rays from its centre."""
    x, y = U - cu, V - cv
    if rot:
        c, s = np.cos(rot), np.sin(rot)
        x, y = c * x + s * y, -s * x + c * y
    if p == 2.0:
        rho = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    else:
        rho = (np.abs(x / a) ** p + np.abs(y / b) ** p) ** (1.0 / p)
    r = np.sqrt(x * x + y * y)
    radius = np.where(rho > 1e-6, r / np.maximum(rho, 1e-6), min(a, b))
    return (1.0 - rho) * radius


def capsule_sdf(U, V, p0, p1, r):
    """Signed distance (>0 inside) to a 2D capsule of radius ``r`` around the segment ``p0``-``p1``."""
    d = np.subtract(p1, p0, dtype=float)
    t = np.clip(((U - p0[0]) * d[0] + (V - p0[1]) * d[1]) / max(d @ d, 1e-9), 0, 1)
    return r - np.hypot(U - p0[0] - t * d[0], V - p0[1] - t * d[1])


def grf(shape, sigma_vox, rng, coarse=1):
    """Zero-mean unit-std Gaussian random field smoothed with ``sigma_vox`` (per axis)."""
    sigma_vox = np.asarray(sigma_vox, float)
    step = np.maximum(1, np.floor(sigma_vox / 1.5).astype(int)) if coarse else np.ones(3, int)
    small = tuple(int(np.ceil(n / s)) + 1 for n, s in zip(shape, step))
    f = ndimage.gaussian_filter(rng.standard_normal(small).astype(np.float32), sigma_vox / step, mode="wrap")
    if np.any(step > 1):
        f = ndimage.zoom(f, step, order=1)
    f = np.ascontiguousarray(f[: shape[0], : shape[1], : shape[2]])
    f -= f.mean()
    return f / max(float(f.std()), 1e-6)


class Grid:
    """Voxel <-> adult-mm coordinates."""

    def __init__(self, shape, spacing, scale, zeta_lo):
        self.shape, self.spacing, self.scale, self.zeta_lo = shape, spacing, scale, zeta_lo
        self.step = np.array(spacing, float) / scale  # adult mm per voxel (z, y, x)

    def to_mm(self, idx):
        idx = np.asarray(idx, float)
        nz, ny, nx = self.shape
        return np.stack([self.zeta_lo + idx[..., 0] * self.step[0], (idx[..., 1] - ny / 2) * self.step[1],
                         (idx[..., 2] - nx / 2) * self.step[2]], axis=-1)

    def to_mm_axis(self, axis, idx):
        n = self.shape[axis]
        if axis == 0:
            return self.zeta_lo + idx * self.step[0]
        return (idx - n / 2) * self.step[axis]

    def to_idx(self, mm):
        mm = np.asarray(mm, float)
        nz, ny, nx = self.shape
        return np.stack([(mm[..., 0] - self.zeta_lo) / self.step[0], mm[..., 1] / self.step[1] + ny / 2,
                         mm[..., 2] / self.step[2] + nx / 2], axis=-1)


def draw_tube(occ, grid: Grid, p0, p1, r0, r1, pix):
    """Max-accumulate the partial-volume occupancy of a tapered tube (adult mm, zyx) into ``occ``.

    Tubes thinner than a voxel get their occupancy scaled by ``2r/pix`` so that their
    line integral across the tube stays about right.
    """
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    rmax = max(r0, r1) + pix
    lo = np.maximum(np.floor(grid.to_idx(np.minimum(p0, p1) - rmax)).astype(int), 0)
    hi = np.minimum(np.ceil(grid.to_idx(np.maximum(p0, p1) + rmax)).astype(int) + 1, occ.shape)
    if np.any(hi <= lo):
        return
    axes = [grid.to_mm_axis(i, np.arange(l, h)) for i, (l, h) in enumerate(zip(lo, hi))]
    Z, Y, X = axes[0][:, None, None] - p0[0], axes[1][None, :, None] - p0[1], axes[2][None, None, :] - p0[2]
    d = p1 - p0
    dd = max(float(d @ d), 1e-9)
    t = np.clip((Z * d[0] + Y * d[1] + X * d[2]) / dd, 0, 1)
    dist = np.sqrt((Z - t * d[0]) ** 2 + (Y - t * d[1]) ** 2 + (X - t * d[2]) ** 2)
    r = r0 + t * (r1 - r0)
    f = np.clip(0.5 + (r - dist) / pix, 0, 1) * np.minimum(1.0, 2.0 * r / pix)
    sl = tuple(slice(l, h) for l, h in zip(lo, hi))
    np.maximum(occ[sl], f.astype(np.float32), out=occ[sl])


def draw_lobulated(occ, grid, c_mm, radius, lobes, amps, pix):
    """Partial-volume occupancy of a lobulated sphere: radius modulated by a few directional bumps."""
    rmax = radius * (1 + amps.sum()) + pix
    lo = np.maximum(np.floor(grid.to_idx(c_mm - rmax)).astype(int), 0)
    hi = np.minimum(np.ceil(grid.to_idx(c_mm + rmax)).astype(int) + 1, occ.shape)
    if np.any(hi <= lo):
        return
    zz, yy, xx = np.meshgrid(*(np.arange(l, h) for l, h in zip(lo, hi)), indexing="ij")
    X = grid.to_mm(np.stack([zz, yy, xx], -1)) - c_mm
    r = np.linalg.norm(X, axis=-1)
    u = X / np.maximum(r, 1e-6)[..., None]
    rr = radius * (1 + np.sum(amps * np.clip(u @ lobes.T, 0, None) ** 3, axis=-1))
    sl = tuple(slice(l, h) for l, h in zip(lo, hi))
    np.maximum(occ[sl], np.clip(0.5 + (rr - r) / pix, 0, 1).astype(np.float32), out=occ[sl])
