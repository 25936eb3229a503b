"""Procedural, seeded 3D chest phantom: noise-free "truth" in HU plus ground-truth masks.

The anatomy is laid out in an *adult-chest* coordinate frame (mm: ``u`` to the patient's
left, ``v`` posterior, ``zeta`` superior with 0 at the carina) and scaled so that the body
fills the requested field of view; the z extent of the volume is a slab of the chest
(position drawn from the seed). Structures are painted with partial-volume (soft) edges:

- body: skin, subcutaneous fat, muscle (thicker paraspinal), ribs with cortex and marrow
  that run obliquely around the chest, sternum, vertebrae with discs, spinal canal;
- mediastinum: fat, heart, aorta (ascending, arch, descending), pulmonary trunk, SVC,
  oesophagus; below the diaphragm domes, liver and upper abdomen;
- lungs: parenchyma between the vessels at -900..-875 HU with correlated texture and a
  posterior (dependent) gradient, fissures, two space-filling vessel trees per lung (tapered
  tubes, radius exponent 2.4), airways (trachea, main bronchi, a few generations) with walls;
- nodules (solid, part-solid, ground-glass), lobulated;
- emphysema: discrete near-air lesions (about -993 HU) with sharp (one-voxel) borders, of three
  kinds: centrilobular (3-10 mm, upper zones, vessels kept), confluent / panlobular regions
  (10-30 mm, lobulated, avascular) and subpleural bullae (10-30 mm, avascular); diameters follow
  truncated power laws in physical mm; milder disease is mostly centrilobular.

Healthy parenchyma stays above -935 HU, so the ground-truth LAA-950 is exactly the
fraction of lung voxels below -950 HU in the truth, which ``info["laa950"]`` reports.
No library generates anatomical CT phantoms procedurally (XCAT-like phantoms are fixed
meshes with licences), hence this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..errors import BadInputError
from ..volume import Volume

PHANTOM_VERSION = "2.0"

ADULT_FOV = 360.0  # mm: the adult field of view that the requested grid is scaled to

HU = {
    "air": -1000.0, "skin": 30.0, "fat": -100.0, "muscle": 45.0, "cortex": 850.0, "marrow": 260.0,
    "vertebra": 230.0, "disc": 80.0, "csf": 10.0, "blood": 40.0, "myocardium": 48.0,
    "mediastinal_fat": -95.0, "liver": 58.0, "cartilage": 110.0, "wall": 20.0, "oesophagus": 35.0,
    "emphysema": -990.0,
}

# Radius exponent of the vessel trees' bifurcations: Murray's ideal is 3, measured pulmonary arterial
# trees give about 2.3-2.7 (Huang et al., J Appl Physiol 1996). With 3 the trees stayed thick out to the
# periphery and the healthy mean lung density came out near -700..-800 HU instead of about -850.
VESSEL_EXPONENT = 2.4

TISSUE_LABELS = {"soft": 1, "fat": 2, "muscle": 3, "bone": 4, "heart": 5, "abdomen": 6}


@dataclass
class Phantom:
    """A phantom truth volume with its ground truth.

    Attributes
    ----------
    volume : Volume
        Noise-free truth in HU, spacing in array order (z, y, x).
    masks : dict of str -> np.ndarray(bool)
        ``body``, ``lungs``, ``lung_left``, ``lung_right``, ``airways``, ``vessels``,
        ``nodules``, ``emphysema``, plus ``fat``, ``muscle``, ``bone``, ``heart``.
    nodule_labels : np.ndarray(int16)
        0 = background, ``i + 1`` = nodule ``i`` of ``info["nodules"]``.
    info : dict
        ``seed``, ``emphysema_target``, ``laa950`` (ground-truth fraction of lung voxels
        below -950 HU, 0..1), ``laa950_percent``, ``nodules`` (``label``, ``type`` solid /
        part-solid / ground-glass, ``center_zyx`` voxel index, ``center_mm`` = index x spacing
        (z, y, x, from voxel [0, 0, 0]), ``diameter_mm``, ``hu``, and ``solid_diameter_mm``
        for part-solid), ``lung_volume_ml``, ``scale`` (mm per adult-chest mm), ``version``,
        ``emphysema_lesions`` (number of lesions per kind).

    Notes
    -----
    A scan cannot keep all of ``laa950``: a smooth 1 mm full-dose scan reads about 60-85 % of it
    (resolution: lesions of a few mm erode, vessels and pleura bloom into lesions), a sharp
    kernel about 95 %.
    """

    volume: Volume
    masks: dict = field(default_factory=dict)
    nodule_labels: np.ndarray = None
    info: dict = field(default_factory=dict)


def _soft(sdf, pix):
    """Partial-volume fraction of a voxel from a signed distance (mm, >0 inside)."""
    return np.clip(0.5 + sdf / pix, 0.0, 1.0).astype(np.float32)


def _ellipse_sdf(U, V, cu, cv, a, b, rot=0.0, p=2.0):
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


def _capsule_sdf(U, V, p0, p1, r):
    d = np.subtract(p1, p0, dtype=float)
    t = np.clip(((U - p0[0]) * d[0] + (V - p0[1]) * d[1]) / max(d @ d, 1e-9), 0, 1)
    return r - np.hypot(U - p0[0] - t * d[0], V - p0[1] - t * d[1])


class _Painter:
    """Paints one axial slice: HU, lung fraction, tissue labels."""

    def __init__(self, shape):
        self.hu = np.full(shape, HU["air"], np.float32)
        self.lung = np.zeros(shape, np.float32)
        self.label = np.zeros(shape, np.uint8)

    def paint(self, f, value, label=0, lung=False):
        if np.isscalar(f) and f == 0:
            return
        self.hu = self.hu * (1 - f) + (0.0 if lung else value) * f
        self.lung = self.lung * (1 - f) + (f if lung else 0.0)
        if label or lung:
            self.label[f > 0.5] = label


def _grf(shape, sigma_vox, rng, coarse=1):
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


class _Anatomy:
    """Seeded parameters of one patient, in adult mm."""

    def __init__(self, rng, height_adult):
        r = rng.uniform
        self.a = r(146, 168)  # body half-width
        self.b = r(98, 122)  # body half-depth
        self.p_body = r(2.1, 2.6)
        self.fat = r(6, 24)
        self.muscle = r(7, 13)
        self.rib_layer = r(9, 12)
        self.heart_scale = r(0.9, 1.1)
        # Healthy parenchyma between the vessels at full inspiration: about -900..-875 HU (the
        # whole-lung mean, vessels included, lands near -860). Its position against -950 matters:
        # lesions at about -993 HU cross -950 near the middle of their edge, so blur neither
        # shrinks nor grows large lesions much (midway crossing conserves volume to first order).
        self.parenchyma = r(-900, -875)
        self.gradient = r(12, 28)  # HU denser posteriorly (dependent lung)
        self.rib_phase = r(0, 24)
        self.rib_slope = r(55, 85)
        self.vert_phase = r(0, 27)
        span = max(0.0, 300.0 - height_adult)
        centre = -30.0 + r(-0.5, 0.5) * min(span, 120.0)
        self.zeta_lo = centre - height_adult / 2
        self.dome_r = r(-120, -100)
        self.dome_l = self.dome_r - r(5, 20)


def _paint_slice(P: _Painter, U, V, zeta, A: _Anatomy, pix, pix_z, cache: dict):
    """Paint the extruded anatomy of one axial slice at height ``zeta`` (adult mm)."""
    # Body tapers to the neck above the apex.
    neck = float(np.clip((zeta - 110.0) / 60.0, 0, 1))
    # The chest widens towards its base (quantised so that slices can share the body arrays).
    widen = 1.0 + 0.005 * round(10.0 * float(np.clip(-zeta / 150.0, -0.5, 1.0)))
    a = A.a * (1 - 0.45 * neck) * widen
    b = A.b * (1 - 0.25 * neck) * (1 + 0.4 * (widen - 1))
    key = (round(neck, 3), widen)
    if key not in cache:
        phi = np.arctan2(U, V)  # 0 = posterior midline, +-pi anterior
        sdf_body = _ellipse_sdf(U, V, 0.0, 8.0, a, b, p=A.p_body)
        fat = A.fat * (1 + 0.35 * np.cos(phi) ** 2)
        muscle = A.muscle + 28.0 * np.clip(np.cos(phi), 0, 1) ** 6 + 8.0 * np.clip(-np.cos(phi), 0, 1) ** 2
        cache.clear()
        cache[key] = (phi, sdf_body, fat, muscle)
    phi, sdf_body, fat, muscle = cache[key]
    P.paint(_soft(sdf_body, pix), HU["skin"], TISSUE_LABELS["soft"])
    P.paint(_soft(sdf_body - 2.0, pix), HU["fat"], TISSUE_LABELS["fat"])
    d_muscle = sdf_body - 2.0 - fat
    P.paint(_soft(d_muscle, pix), HU["muscle"], TISSUE_LABELS["muscle"])
    d_ribs = d_muscle - muscle
    d_cav = d_ribs - A.rib_layer

    # Ribs: bands around the chest wall that fall from posterior to anterior.
    rib_centre = d_ribs - A.rib_layer / 2
    frac = np.abs(phi) / np.pi
    for k in range(-8, 16):
        z_post = A.rib_phase + 24.0 * k - 80.0
        zc = z_post - A.rib_slope * frac ** 1.3
        dz = (zeta - zc) / 5.5
        if np.min(np.abs(dz)) > 1.6:
            continue
        dr = rib_centre / (A.rib_layer * 0.42)
        e = np.sqrt(dr**2 + dz**2)
        anterior = frac > 0.82
        f = _soft((1.0 - e) * 4.0, pix) * (frac > 0.06)
        P.paint(f * anterior, HU["cartilage"], TISSUE_LABELS["bone"])
        P.paint(f * ~anterior, HU["cortex"], TISSUE_LABELS["bone"])
        P.paint(_soft((0.62 - e) * 4.0, pix) * ~anterior * (frac > 0.06), HU["marrow"], TISSUE_LABELS["bone"])

    # Thoracic cavity: lungs where nothing else is, above the diaphragm domes.
    apex = np.clip((zeta - 40.0) / 80.0, 0, 1)
    shrink = np.sqrt(np.clip(1 - apex**2, 0, 1))
    cav_in = d_cav - (1 - shrink) * 90.0
    f_cav = _soft(cav_in, pix)
    dome = np.where(U < 0, A.dome_r - 60 * ((U + 55) / 75) ** 2 - 45 * ((V + 20) / 110) ** 2,
                    A.dome_l - 60 * ((U - 55) / 75) ** 2 - 45 * ((V + 20) / 110) ** 2)
    f_chest = _soft(zeta - dome, pix_z)
    f_lung = f_cav * f_chest
    P.paint(f_lung, 0.0, lung=True)
    P.paint(f_cav * (1 - f_chest), HU["liver"], TISSUE_LABELS["abdomen"])

    # Mediastinum.
    front = -b + 8.0 + 2.0 + A.fat + A.muscle + A.rib_layer
    v_vb = b + 8.0 - 2.0 - A.fat - A.muscle - 22.0
    # Narrow anteriorly (junction line), widest mid-way (great vessels), then the spine.
    t = np.clip((V - front) / max(v_vb + 10.0 - front, 1.0), 0, 1)
    width = 13.0 + 17.0 * np.sin(np.pi * t) ** 0.7
    band = np.minimum(width - np.abs(U - 4.0), np.minimum(V - front + 4.0, v_vb + 40 - V))
    P.paint(_soft(band, pix) * f_cav, HU["mediastinal_fat"], TISSUE_LABELS["fat"])
    hz = (zeta + 75.0) / 58.0
    if abs(hz) < 1:
        s = np.sqrt(1 - hz**2) * A.heart_scale
        heart = _ellipse_sdf(U, V, 22.0, -18.0 + 0.15 * (zeta + 75), 62.0 * s + 1e-3, 47.0 * s + 1e-3, rot=0.55)
        P.paint(_soft(heart + 4.0, pix) * f_cav, HU["mediastinal_fat"], TISSUE_LABELS["fat"])
        P.paint(_soft(heart, pix), HU["myocardium"], TISSUE_LABELS["heart"])
        P.paint(_soft(heart - 9.0, pix), HU["blood"], TISSUE_LABELS["heart"])
    vessels2d = []
    if -45 < zeta < 32:
        vessels2d.append(_ellipse_sdf(U, V, -12.0, -22.0, 15.0, 15.0))  # ascending aorta
    if 30 <= zeta < 46:
        vessels2d.append(_capsule_sdf(U, V, (-12.0, -22.0), (20.0, v_vb - 15.0), 13.0))  # arch
    if zeta < 40:
        vessels2d.append(_ellipse_sdf(U, V, 24.0, v_vb - 14.0, 12.0, 12.0))  # descending aorta
    if -48 < zeta < -8:
        vessels2d.append(_ellipse_sdf(U, V, 14.0, -28.0, 14.0, 13.0))  # pulmonary trunk
    if -30 < zeta < 45:
        vessels2d.append(_ellipse_sdf(U, V, -30.0, -12.0, 10.0, 9.0))  # SVC
    for sdf in vessels2d:
        P.paint(_soft(sdf + 2.5, pix) * f_cav, HU["mediastinal_fat"], TISSUE_LABELS["fat"])
        P.paint(_soft(sdf, pix), HU["blood"], TISSUE_LABELS["heart"])
    P.paint(_soft(_ellipse_sdf(U, V, 8.0, v_vb - 26.0, 8.0, 6.0), pix), HU["oesophagus"], TISSUE_LABELS["soft"])

    # Spine: vertebral body (or disc), canal, posterior elements.
    in_disc = ((zeta - A.vert_phase) % 27.0) < 5.0
    vb = _ellipse_sdf(U, V, 0.0, v_vb, 19.0, 16.0)
    P.paint(_soft(vb + 3.0, pix), HU["muscle"], TISSUE_LABELS["muscle"])
    if in_disc:
        P.paint(_soft(vb, pix), HU["disc"], TISSUE_LABELS["soft"])
    else:
        P.paint(_soft(vb, pix), HU["cortex"] - 150, TISSUE_LABELS["bone"])
        P.paint(_soft(vb - 2.0, pix), HU["vertebra"], TISSUE_LABELS["bone"])
    arch = _ellipse_sdf(U, V, 0.0, v_vb + 24.0, 13.0, 12.0)
    P.paint(_soft(arch, pix), HU["cortex"] - 100, TISSUE_LABELS["bone"])
    for side in (-1, 1):
        P.paint(_soft(_ellipse_sdf(U, V, side * 24.0, v_vb + 18.0, 12.0, 5.0, rot=side * 0.5), pix),
                HU["cortex"] - 100, TISSUE_LABELS["bone"])
    P.paint(_soft(_ellipse_sdf(U, V, 0.0, v_vb + 40.0, 4.5, 12.0), pix), HU["cortex"] - 100, TISSUE_LABELS["bone"])
    P.paint(_soft(_ellipse_sdf(U, V, 0.0, v_vb + 24.0, 7.5, 7.0), pix), HU["csf"], TISSUE_LABELS["soft"])
    # Sternum.
    if -110 < zeta < 60:
        P.paint(_soft(_ellipse_sdf(U, V, 0.0, front - 6.0, 16.0, 6.0), pix), HU["cortex"] - 300,
                TISSUE_LABELS["bone"])
        P.paint(_soft(_ellipse_sdf(U, V, 0.0, front - 6.0, 13.0, 3.5), pix), HU["marrow"], TISSUE_LABELS["bone"])
    return sdf_body


class _Grid:
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


def _draw_tube(occ, grid: _Grid, p0, p1, r0, r1, pix):
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


def _grow_tree(start, points, radius, rng, segs, min_points=2, min_radius=0.0, depth=0, max_depth=40, exponent=3.0):
    """Space-filling branching: aim at the territory's centroid, split it along its main axis.

    Child radii follow Murray's law on territory size (r^3 proportional to the points served).
    """
    c = points.mean(axis=0)
    if len(points) <= min_points or radius < min_radius or depth >= max_depth:
        segs.append((start, c, radius, radius * 0.8))
        return
    end = start + (c - start) * (0.45 if depth else 0.3)
    segs.append((start, end, radius, radius * 0.96))
    x = points - c
    cov = x.T @ x
    axis = np.linalg.eigh(cov)[1][:, -1]
    side = x @ axis > 0
    n = len(points)
    for sel in (side, ~side):
        m = int(sel.sum())
        if m == 0:
            continue
        _grow_tree(end, points[sel], radius * (m / n) ** (1 / exponent), rng, segs, min_points, min_radius,
                   depth + 1, max_depth, exponent)


def make_phantom(seed: int, shape=(96, 192, 192), spacing=(0.5, 0.8, 0.8), emphysema: float | None = 0.0,
                 nodules: int | None = None, progress=None) -> Phantom:
    """Generate a seeded chest phantom.

    Parameters
    ----------
    seed : int
        Seeds >= 1000 are held out from training by convention.
    shape : tuple of int
        ``(z, y, x)`` voxels.
    spacing : tuple of float
        ``(z, y, x)`` mm. The body is scaled to fill the in-plane field of view.
    emphysema : float or None
        Target fraction (0..0.6) of lung voxels below -950 HU; None draws one at random
        (40 % of patients near 0-2 %, the rest 2-35 %). The achieved value is
        ``info["laa950"]``.
    nodules : int or None
        Number of nodules; None draws 0-3.
    progress : callable, optional
        ``progress("phantom", fraction)`` as the generation goes on.

    Returns
    -------
    Phantom
    """
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or min(shape) < 1 or shape[1] < 16 or shape[2] < 16:
        raise BadInputError(f"Phantom shape must be (z, y, x) with at least 16x16 pixels, got {shape}.")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise BadInputError(f"Phantom spacing must be three positive numbers, got {spacing}.")
    if emphysema is not None and not 0 <= emphysema <= 0.6:
        raise BadInputError(f"emphysema is a fraction of lung volume in [0, 0.6], got {emphysema}.")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xC7])
    if emphysema is None:
        emphysema = float(rng.uniform(0, 0.02) if rng.random() < 0.4 else np.exp(rng.uniform(np.log(0.02), np.log(0.35))))
    if nodules is None:
        nodules = int(rng.integers(0, 4))
    nz, ny, nx = shape
    scale = min(nx * spacing[2], ny * spacing[1]) / ADULT_FOV
    A = _Anatomy(rng, nz * spacing[0] / scale)
    grid = _Grid(shape, spacing, scale, A.zeta_lo)
    pix = float(min(grid.step[1], grid.step[2]))
    pix_z = float(grid.step[0])

    V, U = np.meshgrid((np.arange(ny) - ny / 2) * grid.step[1], (np.arange(nx) - nx / 2) * grid.step[2], indexing="ij")
    hu = np.empty(shape, np.float32)
    lung_frac = np.empty(shape, np.float32)
    labels = np.empty(shape, np.uint8)
    body = np.empty(shape, bool)
    cache: dict = {}
    report = (lambda f: progress("phantom", f)) if progress else (lambda f: None)
    for k in range(nz):
        if k % 8 == 0:
            report(0.4 * k / nz)
        P = _Painter((ny, nx))
        sdf_body = _paint_slice(P, U, V, A.zeta_lo + k * pix_z, A, pix, pix_z, cache)
        hu[k], lung_frac[k], labels[k], body[k] = P.hu, P.lung, P.label, sdf_body > 0

    report(0.4)
    # Soft-tissue texture (fat lobules, muscle fibres: a few HU).
    step_mm = grid.step
    tex = _grf(shape, 1.2 / step_mm, rng)
    hu += np.where(labels > 0, 4.0, 0.0).astype(np.float32) * tex
    marrow = (labels == TISSUE_LABELS["bone"]) & (hu < 400)
    hu[marrow] += 35.0 * tex[marrow]

    lungs_region = lung_frac > 0.5
    # Parenchyma: base + dependent gradient + correlated texture; never below -935 HU.
    Vz = np.broadcast_to(V[None], shape)
    par = (A.parenchyma + A.gradient * np.clip(Vz / A.b, -1, 1)
           + 6.0 * _grf(shape, 1.0 / step_mm, rng) + 5.0 * _grf(shape, 5.0 / step_mm, rng)).astype(np.float32)
    # Fissures: thin oblique sheets, slightly denser.
    for side, tilt, off in ((-1, 0.9, rng.uniform(-20, 20)), (1, 0.85, rng.uniform(-20, 20))):
        zeta = (A.zeta_lo + np.arange(nz) * pix_z)[:, None, None]
        d = Vz * np.cos(tilt) - zeta * np.sin(tilt) + 0.5 * np.abs(U)[None] - off
        sheet = np.exp(-0.5 * (d / max(0.5, 0.35 * pix)) ** 2) * (np.sign(U)[None] == side)
        par += (120.0 * sheet).astype(np.float32)
    np.clip(par, -935.0, -700.0, out=par)
    hu += lung_frac * par

    report(0.5)
    # Vessel trees and airways.
    vessel = np.zeros(shape, np.float32)
    wall = np.zeros(shape, np.float32)
    lumen = np.zeros(shape, np.float32)
    lung_idx = np.argwhere(lungs_region)
    zeta_hi = A.zeta_lo + (nz - 1) * pix_z
    v_tr = A.b + 8.0 - 2.0 - A.fat - A.muscle - 22.0 - 45.0
    nod_info = []
    nod_occ = np.zeros(shape, np.float32)
    nod_labels = np.zeros(shape, np.int16)
    if len(lung_idx) > 50:
        lung_mm = grid.to_mm(lung_idx)
        for side, name in ((-1, "right"), (1, "left")):
            mine = lung_mm[np.sign(lung_mm[:, 2]) == side]
            if len(mine) < 20:
                continue
            for tree, (hv, hz, r0) in enumerate(((v_tr + 18.0, -12.0, 7.0), (v_tr + 30.0, -45.0, 6.5))):
                k = min(len(mine), 1500)
                pts = mine[rng.choice(len(mine), k, replace=False)] + rng.uniform(-0.5, 0.5, (k, 3)) * step_mm
                root = np.array([np.clip(hz, A.zeta_lo - 25, zeta_hi + 25), hv, side * 42.0])
                segs = []
                _grow_tree(root, pts, r0, rng, segs, min_points=2, exponent=VESSEL_EXPONENT)
                for p0, p1, ra, rb in segs:
                    _draw_tube(vessel, grid, p0, p1, ra, rb, pix)
            # Airways follow the arteries' territories (bronchovascular bundles), a few generations.
            k = min(len(mine), 400)
            pts = mine[rng.choice(len(mine), k, replace=False)]
            carina = np.array([0.0, v_tr, 0.0])
            hilum = np.array([np.clip(-18.0, A.zeta_lo - 25, zeta_hi + 25), v_tr + 8.0, side * 38.0])
            segs = [(carina, hilum, 6.5, 5.5)]
            _grow_tree(hilum, pts, 4.6, rng, segs, min_points=20, min_radius=max(1.4, 0.7 * pix), max_depth=4)
            if side == 1:
                segs.append((np.array([zeta_hi + 40.0, v_tr, 0.0]), carina, 8.5, 8.0))  # trachea
            for p0, p1, ra, rb in segs:
                tw = lambda r: max(0.18 * r + 0.5, 1.2 * pix)  # noqa: E731
                _draw_tube(wall, grid, p0, p1, ra + tw(ra), rb + tw(rb), pix)
                _draw_tube(lumen, grid, p0, p1, ra, rb, pix)

        report(0.75)
        # Nodules: lobulated spheres well inside the lungs.
        if nodules > 0:
            # Distance to the lung boundary on a 2x coarser grid (fast; nodule centres need no more).
            edt = ndimage.distance_transform_edt(lungs_region[::2, ::2, ::2], sampling=step_mm * 2)
            for i in range(nodules):
                typ = rng.choice(["solid", "part-solid", "ground-glass"], p=[0.5, 0.2, 0.3])
                diam = float(np.exp(rng.uniform(np.log(5.0), np.log(22.0))))
                ok = np.argwhere(edt > diam / 2 + 2.0)
                if len(ok) == 0:
                    diam = float(max(edt.max() * 2 - 4.0, 0))
                    ok = np.argwhere(edt > diam / 2 + 2.0) if diam > 3 else ok
                if len(ok) == 0:
                    break
                c_idx = np.minimum(ok[rng.integers(len(ok))] * 2, np.array(shape) - 1)
                c_mm = grid.to_mm(c_idx)
                one = np.zeros(shape, np.float32)
                lobes = rng.normal(size=(5, 3))
                lobes /= np.linalg.norm(lobes, axis=1, keepdims=True)
                _draw_lobulated(one, grid, c_mm, diam / 2, lobes, rng.uniform(0.05, 0.18, 5), pix)
                hu_n = {"solid": rng.uniform(20, 55), "part-solid": rng.uniform(-600, -450),
                        "ground-glass": rng.uniform(-650, -350)}[typ]
                n_tex = 8.0 * tex if typ == "solid" else 40.0 * tex
                edt[one[::2, ::2, ::2] > 0.05] = 0  # no overlap with later nodules
                entry = {"label": i + 1, "type": str(typ), "center_zyx": [int(c) for c in c_idx],
                         "center_mm": [float(c) * s for c, s in zip(c_idx, spacing)],
                         "diameter_mm": round(diam * scale, 2), "hu": round(float(hu_n), 1)}
                f = one
                hu[:] = hu * (1 - f) + (hu_n + n_tex) * f
                if typ == "part-solid":
                    core = np.zeros(shape, np.float32)
                    rc = diam / 2 * rng.uniform(0.3, 0.55)
                    _draw_lobulated(core, grid, c_mm, rc, lobes, rng.uniform(0.05, 0.15, 5), pix)
                    hu[:] = hu * (1 - core) + (35.0 + 8.0 * tex) * core
                    entry["solid_diameter_mm"] = round(2 * rc * scale, 2)
                np.maximum(nod_occ, f, out=nod_occ)
                nod_labels[(f > 0.5) & (nod_labels == 0)] = i + 1
                nod_info.append(entry)

    vessel *= (labels > 0) | lungs_region  # inside the body's chest only
    hu[:] = hu * (1 - vessel) + (HU["blood"] + 3.0 * tex) * vessel
    hu[:] = hu * (1 - wall) + HU["wall"] * wall
    hu[:] = hu * (1 - lumen) + HU["air"] * lumen
    airways = wall > 0.5
    lungs = lungs_region & ~airways

    report(0.85)
    lesion_counts = {}
    if emphysema > 0 and lungs.any():
        lung_share = lung_frac * (1 - wall) * (1 - nod_occ)
        lesion_counts, avascular = _paint_emphysema(hu, lungs, (lung_share, lung_share * (1 - vessel)), par, tex,
                                                    grid, spacing, float(emphysema), rng)
        vessel *= 1 - avascular
    below = lungs & (hu < -950)
    achieved = float(below.sum() / max(lungs.sum(), 1))

    lung_left = lungs & (np.broadcast_to(U[None], shape) > 0)
    lung_right = lungs & ~lung_left
    voxel_ml = float(np.prod(spacing)) / 1000.0
    masks = {
        "body": body,
        "lungs": lungs,
        "lung_left": lung_left,
        "lung_right": lung_right,
        "airways": airways,
        "vessels": (vessel > 0.5) & lungs_region,
        "nodules": nod_labels > 0,
        "emphysema": below,
        "fat": labels == TISSUE_LABELS["fat"],
        "muscle": labels == TISSUE_LABELS["muscle"],
        "bone": labels == TISSUE_LABELS["bone"],
        "heart": labels == TISSUE_LABELS["heart"],
    }
    origin = (-(nx / 2) * spacing[2], -(ny / 2) * spacing[1], 0.0)
    info = {
        "seed": int(seed),
        "version": PHANTOM_VERSION,
        "shape": list(shape),
        "spacing": list(spacing),
        "scale": round(scale, 4),
        "zeta_range_adult_mm": [round(A.zeta_lo, 1), round(zeta_hi, 1)],
        "emphysema_target": round(float(emphysema), 5),
        "laa950": achieved,
        "laa950_percent": round(100 * achieved, 3),
        "lung_volume_ml": round(float(lungs.sum()) * voxel_ml, 2),
        "nodules": nod_info,
        "emphysema_lesions": lesion_counts,
    }
    meta = {"Modality": "CT", "Manufacturer": "CTNormalize phantom", "SliceThickness": f"{spacing[0]:g}",
            "phantom": {"seed": int(seed), "version": PHANTOM_VERSION}}
    vol = Volume(hu, spacing=spacing, origin=origin, meta=meta)
    report(1.0)
    return Phantom(vol, masks, nod_labels, info)


def _draw_lobulated(occ, grid, c_mm, radius, lobes, amps, pix):
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


# --- Emphysema -------------------------------------------------------------------------------
# Lesions are discrete low-attenuation blobs that replace the parenchyma, in three kinds (Fleischner
# Society glossary; Lynch et al., Radiology 2015): centrilobular lucencies a few mm across, upper-zone
# predominant; confluent / panlobular regions where neighbouring lobules coalesce; paraseptal
# emphysema and bullae, 10-30 mm, against the pleura. Each kind's diameters follow a truncated
# power law (number density ~ d^-(1 + alpha)), which gives the heavy-tailed cluster sizes reported
# for low-attenuation areas (Mishima et al., PNAS 1999). Sizes are in *physical* mm, not in the
# phantom's scaled adult frame: how much of a lesion a scan keeps depends on its size relative to
# the scanner's point-spread function, so a chest shrunk to fit a small grid must not also shrink
# its 5 mm lobular lesions to 2 mm ones. Only the largest sizes are capped by the lung's own size.
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


def _paint_emphysema(hu, lungs, share, par, tex, grid, spacing, target, rng):
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

    idx = np.argwhere(lungs)
    zone = np.clip((grid.zeta_lo + idx[:, 0] * grid.step[0]) / 120.0, -1, 1)  # +1 apex, -1 base (adult frame)
    jitter = lambda n: rng.uniform(-0.5, 0.5, (n, 3)) * sp  # noqa: E731
    cdf = {}
    for kind, (_, _, _, upper) in EMPHYSEMA_KINDS.items():
        w = np.cumsum(np.exp(upper * zone))
        cdf[kind] = w / w[-1]

    def centres(kind, n):
        k = np.minimum(np.searchsorted(cdf[kind], rng.random(n)), n_lung - 1)
        return idx[k] * sp + jitter(n)

    # Distance to the pleura on a 2x coarser grid, for bullae.
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
