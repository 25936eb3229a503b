"""Emphysema lesions painted into the phantom's lungs until a target LAA-950 is reached.

Lesions are discrete low-attenuation blobs that replace the parenchyma, in three kinds (Fleischner
Society glossary; Lynch et al., Radiology 2015): centrilobular lucencies a few mm across, upper-zone
predominant; confluent / panlobular regions where neighbouring lobules coalesce; paraseptal
emphysema and bullae, 10-30 mm, against the pleura. Each kind's diameters follow a truncated
power law (number density ~ d^-(1 + alpha)), which gives the heavy-tailed cluster sizes reported
for low-attenuation areas (Mishima et al., PNAS 1999). Sizes are in *physical* mm, not in the
phantom's scaled adult frame: how much of a lesion a scan keeps depends on its size relative to
the scanner's point-spread function, so a chest shrunk to fit a small grid must not also shrink
its 5 mm lobular lesions to 2 mm ones. Only the largest sizes are capped by the lung's own size.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

EMPHYSEMA_KINDS = {
    # kind: (min diameter mm, max diameter mm, alpha, upper-zone weight)
    "centrilobular": (3.0, 10.0, 2.0, 1.2),
    "confluent": (10.0, 30.0, 1.5, 0.0),
    "bulla": (10.0, 30.0, 1.5, 0.8),
}
# Centrilobular lesions keep their vessels (the lobular artery runs through the lesion's centre);
# confluent / panlobular regions and bullae are avascular: the destroyed lung has lost its small
# vessels and bullae push the rest aside, so there the lesion replaces vessels as well.
AVASCULAR = ("confluent", "bulla")
EMPHYSEMA_HU = -993.0  # inside a lesion: air with a few residual strands; kept in [-1000, -984]


def _kind_shares(target):
    """Share of the emphysema volume per kind: centrilobular lesions dominate mild disease; as it
    progresses they coalesce into confluent / panlobular regions and bullae grow."""
    cle = float(np.clip(0.85 - 1.6 * target, 0.3, 0.85))
    bulla = float(np.clip(0.05 + 0.5 * target, 0.05, 0.3))
    return {"centrilobular": cle, "confluent": 1.0 - cle - bulla, "bulla": bulla}


def _power_law(rng, lo, hi, alpha, n=None):
    """Diameters from a power law truncated to [lo, hi] (inverse CDF)."""
    if hi <= lo:
        return np.full(n, lo) if n is not None else lo
    u = rng.random(n)
    return (lo**-alpha - u * (lo**-alpha - hi**-alpha)) ** (-1.0 / alpha)


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    return q * np.sign(np.diag(r))


def _lesion_groups(rng, kind, budget_mm3, centres, pleural, d_cap):
    """Draw lesions of one kind until their nominal volume reaches ``budget_mm3``.

    A lesion is ``(centre_mm_zyx, semi_axes_mm, rotation, lobes, amps)``: a mildly elongated
    ellipsoid whose radius bulges towards a few directions (lobules coalescing into a confluent
    region). ``centres(kind, n)`` draws candidate centres (physical mm); ``pleural(r)`` draws a
    centre within about ``r`` of the pleura, so that the pleura cuts bullae and paraseptal lesions.
    """
    lo, hi, alpha, _ = EMPHYSEMA_KINDS[kind]
    hi = max(min(hi, d_cap), lo)
    out, vol = [], 0.0
    while vol < budget_mm3:
        d = float(_power_law(rng, lo, hi, alpha))
        c = pleural(d / 2) if kind == "bulla" else centres(kind, 1)[0]
        n_lobes = 5 if kind == "confluent" else 0
        lobes = rng.standard_normal((n_lobes, 3))
        lobes /= np.linalg.norm(lobes, axis=1, keepdims=True) if n_lobes else 1.0
        amps = rng.uniform(0.1, 0.35, n_lobes)
        out.append((c, _axes(rng, d / 2), _random_rotation(rng), lobes, amps))
        vol += 4.19 * (d / 2) ** 3 * (0.6 if kind == "bulla" else 1.0)  # bullae are cut by the pleura
    return out


def _axes(rng, r):
    """Semi-axes of a mildly elongated ellipsoid with the volume of a sphere of radius ``r``."""
    s = rng.uniform(0.8, 1.25, 3)
    return r * s / np.prod(s) ** (1 / 3)


def _paint_lesion(sdf, spacing, lesion, pix):
    """Max-accumulate a lesion's signed distance (mm, >0 inside; exact along rays from its centre)."""
    centre, axes, rot, lobes, amps = lesion
    rmax = float(axes.max()) * (1 + float(np.sum(amps))) + 2 * pix
    sp = np.asarray(spacing, float)
    lo = np.maximum(np.floor((centre - rmax) / sp).astype(int), 0)
    hi = np.minimum(np.ceil((centre + rmax) / sp).astype(int) + 1, sdf.shape)
    if np.any(hi <= lo):
        return
    x = [np.arange(l, h) * s - c for l, h, s, c in zip(lo, hi, sp, centre)]
    xs = (x[0][:, None, None], x[1][None, :, None], x[2][None, None, :])
    rho = np.sqrt(sum((sum(rot[j, i] * xs[j] for j in range(3)) / axes[i]) ** 2 for i in range(3)))
    r = np.sqrt(xs[0] ** 2 + xs[1] ** 2 + xs[2] ** 2)
    radius = np.where(rho > 1e-6, r / np.maximum(rho, 1e-6), axes.min())
    if len(amps):
        u = np.stack(np.broadcast_arrays(*xs), -1) / np.maximum(r, 1e-6)[..., None]
        radius = radius * (1 + np.sum(amps * np.clip(u @ lobes.T, 0, None) ** 3, axis=-1))
    d = radius - r
    sl = tuple(slice(l, h) for l, h in zip(lo, hi))
    np.maximum(sdf[sl], d.astype(np.float32), out=sdf[sl])


def _centre_samplers(lungs, grid, sp, rng):
    """``(centres(kind, n), pleural(r))``: lesion centres (physical mm) drawn inside the lungs.

    Centres follow each kind's upper-zone weight; ``pleural(r)`` draws a centre within
    about ``r`` of the pleura (distance on a 2x coarser grid), for bullae.
    """
    idx = np.argwhere(lungs)
    n_lung = len(idx)
    zone = np.clip((grid.zeta_lo + idx[:, 0] * grid.step[0]) / 120.0, -1, 1)  # +1 apex, -1 base (adult frame)
    jitter = lambda n: rng.uniform(-0.5, 0.5, (n, 3)) * sp  # noqa: E731
    cdf = {}
    for kind, (_, _, _, upper) in EMPHYSEMA_KINDS.items():
        w = np.cumsum(np.exp(upper * zone))
        cdf[kind] = w / w[-1]

    def centres(kind, n):
        k = np.minimum(np.searchsorted(cdf[kind], rng.random(n)), n_lung - 1)
        return idx[k] * sp + jitter(n)

    edt = ndimage.distance_transform_edt(np.pad(lungs[::2, ::2, ::2], 1), sampling=sp * 2)[1:-1, 1:-1, 1:-1]
    coarse = np.argwhere(edt > 0)
    coarse_d = edt[edt > 0]
    coarse_w = np.exp(EMPHYSEMA_KINDS["bulla"][3] * np.clip(
        (grid.zeta_lo + coarse[:, 0] * 2 * grid.step[0]) / 120.0, -1, 1))

    def pleural(r):
        if len(coarse) == 0:
            return centres("bulla", 1)[0]
        w = coarse_w * (coarse_d <= max(0.7 * r, float(coarse_d.min())))
        k = rng.choice(len(coarse), p=w / w.sum())
        return coarse[k] * 2 * sp + jitter(1)[0]

    return centres, pleural


def paint_emphysema(hu, lungs, share, par, tex, grid, spacing, target, rng):
    """Paint emphysema lesions into ``hu`` (in place) until a ``target`` fraction of lung voxels is below -950 HU.

    ``share`` = (lung share, parenchymal share) of each voxel: avascular lesions replace the
    former, centrilobular ones only the latter (vessels stay). Lesions are drawn and painted
    until the target is reached; a final common offset of all lesion borders (a fraction of a
    voxel) makes the fraction exact. Returns (lesions per kind, avascular occupancy 0..1).
    """
    sp = np.asarray(spacing, float)
    pix = float(min(sp[1], sp[2]))
    base, pa, pw, par_l = hu[lungs], share[0][lungs], share[1][lungs], par[lungs]
    emph_hu = np.clip(EMPHYSEMA_HU + 4.0 * tex[lungs], -1000.0, -984.0)
    n_lung = base.size
    centres, pleural = _centre_samplers(lungs, grid, sp, rng)
    # The largest lesions stay well inside a lung: cap by a third of one lung's width.
    width = lungs.any(axis=(0, 1)).sum() * sp[2] / 2
    d_cap = max(0.33 * width, 3.0)

    sdf = {"vascular": np.full(hu.shape, -1e3, np.float32), "avascular": np.full(hu.shape, -1e3, np.float32)}

    def blend(offset=0.0):
        occ_v = np.clip(0.5 + (sdf["vascular"][lungs] + offset) / pix, 0.0, 1.0)
        occ_a = np.clip(0.5 + (sdf["avascular"][lungs] + offset) / pix, 0.0, 1.0) * pa
        h = base + occ_v * pw * (emph_hu - par_l)
        return h + occ_a * (emph_hu - h)

    def fraction(offset=0.0):
        return float(np.count_nonzero(blend(offset) < -950.0)) / n_lung

    shares = _kind_shares(target)
    counts = {k: 0 for k in shares}
    lung_mm3 = n_lung * float(np.prod(sp))
    achieved = 0.0
    for _ in range(30):
        budget = max(target - achieved, 0.002) * lung_mm3 * 1.1
        lesions = [(k, x) for k in shares for x in _lesion_groups(rng, k, shares[k] * budget, centres, pleural, d_cap)]
        order = rng.permutation(len(lesions))
        step = max(1, len(order) // 20)
        for j, li in enumerate(order):
            kind, lesion = lesions[li]
            _paint_lesion(sdf["avascular" if kind in AVASCULAR else "vascular"], sp, lesion, pix)
            counts[kind] += 1
            if (j + 1) % step == 0 or j == len(order) - 1:
                achieved = fraction()
                if achieved >= target:
                    break
        if achieved >= target:
            break
    lo_off, hi_off = -3.0 * pix, 0.0
    for _ in range(25):
        mid = 0.5 * (lo_off + hi_off)
        if fraction(mid) >= target:
            hi_off = mid
        else:
            lo_off = mid
    hu[lungs] = blend(hi_off)
    occ_a = np.zeros(hu.shape, np.float32)
    occ_a[lungs] = np.clip(0.5 + (sdf["avascular"][lungs] + hi_off) / pix, 0.0, 1.0)
    return counts, occ_a
