"""``make_phantom``: assemble a seeded chest phantom from its parts, with its ground truth.

The steps run in a fixed order on one random generator, so a seed gives the same phantom
bit for bit: anatomy slice by slice, soft-tissue texture, lung parenchyma, vessel and
airway trees, nodules, airways and vessels composited, emphysema, then masks and ``info``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...errors import BadInputError
from ...volume import Volume
from .anatomy import HU, TISSUE_LABELS, Anatomy, Painter, paint_slice
from .emphysema import paint_emphysema
from .geometry import Grid, grf
from .lungs import draw_trees, parenchyma, place_nodules

PHANTOM_VERSION = "2.0"

ADULT_FOV = 360.0  # mm: the adult field of view that the requested grid is scaled to


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


def _checked(shape, spacing, emphysema):
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or min(shape) < 1 or shape[1] < 16 or shape[2] < 16:
        raise BadInputError(f"Phantom shape must be (z, y, x) with at least 16x16 pixels, got {shape}.")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise BadInputError(f"Phantom spacing must be three positive numbers, got {spacing}.")
    if emphysema is not None and not 0 <= emphysema <= 0.6:
        raise BadInputError(f"emphysema is a fraction of lung volume in [0, 0.6], got {emphysema}.")
    return shape, spacing


def _paint_slices(shape, U, V, A, grid, pix, pix_z, report):
    """Anatomy slice by slice: ``(hu, lung fraction, tissue labels, body)``."""
    nz, ny, nx = shape
    hu = np.empty(shape, np.float32)
    lung_frac = np.empty(shape, np.float32)
    labels = np.empty(shape, np.uint8)
    body = np.empty(shape, bool)
    cache: dict = {}
    for k in range(nz):
        if k % 8 == 0:
            report(0.4 * k / nz)
        P = Painter((ny, nx))
        sdf_body = paint_slice(P, U, V, A.zeta_lo + k * pix_z, A, pix, pix_z, cache)
        hu[k], lung_frac[k], labels[k], body[k] = P.hu, P.lung, P.label, sdf_body > 0
    return hu, lung_frac, labels, body


def _tissue_texture(hu, labels, grid, rng):
    """Soft-tissue texture (fat lobules, muscle fibres: a few HU) and marrow texture, in place; returns the field."""
    tex = grf(hu.shape, 1.2 / grid.step, rng)
    hu += np.where(labels > 0, 4.0, 0.0).astype(np.float32) * tex
    marrow = (labels == TISSUE_LABELS["bone"]) & (hu < 400)
    hu[marrow] += 35.0 * tex[marrow]
    return tex


def _masks(body, lungs, lungs_region, airways, vessel, nod_labels, below, labels, U):
    lung_left = lungs & (np.broadcast_to(U[None], lungs.shape) > 0)
    return {
        "body": body,
        "lungs": lungs,
        "lung_left": lung_left,
        "lung_right": lungs & ~lung_left,
        "airways": airways,
        "vessels": (vessel > 0.5) & lungs_region,
        "nodules": nod_labels > 0,
        "emphysema": below,
        "fat": labels == TISSUE_LABELS["fat"],
        "muscle": labels == TISSUE_LABELS["muscle"],
        "bone": labels == TISSUE_LABELS["bone"],
        "heart": labels == TISSUE_LABELS["heart"],
    }


def _info(seed, shape, spacing, scale, zeta_lo, zeta_hi, emphysema, achieved, lungs, nod_info, lesion_counts):
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return {
        "seed": int(seed),
        "version": PHANTOM_VERSION,
        "shape": list(shape),
        "spacing": list(spacing),
        "scale": round(scale, 4),
        "zeta_range_adult_mm": [round(zeta_lo, 1), round(zeta_hi, 1)],
        "emphysema_target": round(float(emphysema), 5),
        "laa950": achieved,
        "laa950_percent": round(100 * achieved, 3),
        "lung_volume_ml": round(float(lungs.sum()) * voxel_ml, 2),
        "nodules": nod_info,
        "emphysema_lesions": lesion_counts,
    }


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
    shape, spacing = _checked(shape, spacing, emphysema)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xC7])
    if emphysema is None:
        emphysema = float(rng.uniform(0, 0.02) if rng.random() < 0.4 else np.exp(rng.uniform(np.log(0.02), np.log(0.35))))
    if nodules is None:
        nodules = int(rng.integers(0, 4))
    nz, ny, nx = shape
    scale = min(nx * spacing[2], ny * spacing[1]) / ADULT_FOV
    A = Anatomy(rng, nz * spacing[0] / scale)
    grid = Grid(shape, spacing, scale, A.zeta_lo)
    pix = float(min(grid.step[1], grid.step[2]))
    pix_z = float(grid.step[0])
    report = (lambda f: progress("phantom", f)) if progress else (lambda f: None)

    V, U = np.meshgrid((np.arange(ny) - ny / 2) * grid.step[1], (np.arange(nx) - nx / 2) * grid.step[2], indexing="ij")
    hu, lung_frac, labels, body = _paint_slices(shape, U, V, A, grid, pix, pix_z, report)
    report(0.4)
    tex = _tissue_texture(hu, labels, grid, rng)
    lungs_region = lung_frac > 0.5
    par = parenchyma(shape, U, V, A, grid, pix, pix_z, rng)
    hu += lung_frac * par

    report(0.5)
    vessel = np.zeros(shape, np.float32)
    wall = np.zeros(shape, np.float32)
    lumen = np.zeros(shape, np.float32)
    nod_info, nod_occ, nod_labels = [], np.zeros(shape, np.float32), np.zeros(shape, np.int16)
    lung_idx = np.argwhere(lungs_region)
    if len(lung_idx) > 50:
        draw_trees(vessel, wall, lumen, grid.to_mm(lung_idx), grid, A, pix, rng)
        report(0.75)
        nod_info, nod_occ, nod_labels = place_nodules(hu, lungs_region, tex, nodules, grid, spacing, pix, rng)

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
        lesion_counts, avascular = paint_emphysema(hu, lungs, (lung_share, lung_share * (1 - vessel)), par, tex,
                                                   grid, spacing, float(emphysema), rng)
        vessel *= 1 - avascular
    below = lungs & (hu < -950)
    achieved = float(below.sum() / max(lungs.sum(), 1))

    masks = _masks(body, lungs, lungs_region, airways, vessel, nod_labels, below, labels, U)
    info = _info(seed, shape, spacing, scale, A.zeta_lo, A.zeta_lo + (nz - 1) * pix_z, emphysema, achieved,
                 lungs, nod_info, lesion_counts)
    meta = {"Modality": "CT", "Manufacturer": "CTNormalize phantom", "SliceThickness": f"{spacing[0]:g}",
            "phantom": {"seed": int(seed), "version": PHANTOM_VERSION}}
    origin = (-(nx / 2) * spacing[2], -(ny / 2) * spacing[1], 0.0)
    vol = Volume(hu, spacing=spacing, origin=origin, meta=meta)
    report(1.0)
    return Phantom(vol, masks, nod_labels, info)
