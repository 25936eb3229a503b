"""Truth volumes for the independent scanner: lung2 (real anatomy), held-out phantoms, emphysema.

- :func:`lung2_truth` — a slab of pyradiomics' lung2 (real chest CT, 5 mm slices,
  0.63 mm pixels), optionally block-averaged in-plane, with its lung mask (our lung
  segmentation on the whole unscanned volume) and tumour labels. Evaluation only.
- :func:`phantom_truth` — ``simulate.make_phantom`` with a seed >= 1000, used as a truth
  volume only (its scanner is never used here).
- :func:`scale_patient` — a larger or smaller patient: the anatomy zoomed in-plane about
  the centre inside the same field of view.
- :func:`insert_emphysema` — clusters of -1000..-950 HU with heavy-tailed sizes (1-30 mm)
  into lung parenchyma, with partial volume along z for thick truth slices.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy import ndimage as ndi

from ...errors import BadInputError
from ...volume import Volume

LUNG2_SLAB = (26, 34)  # 8 slices (40 mm) of lung2 below its tumour, with large lung sections


@dataclass
class Truth:
    """A truth volume and its masks on the truth's grid."""

    volume: Volume
    lung: Optional[np.ndarray]
    emphysema: Optional[np.ndarray] = None  # occupancy >= 0.5 of inserted clusters
    labels: Optional[np.ndarray] = None  # tumour / nodule labels
    info: dict = field(default_factory=dict)


def _cache_dir():
    from ...testdata import cache_dir

    d = cache_dir() / "heldout"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _lung2_full():
    """lung2's HU, geometry, tumour labels and lung mask (the mask cached: it takes ~30 s)."""
    import SimpleITK as sitk

    from ... import testdata
    from ...quantify.lung import lung_mask

    img_p, lab_p = testdata.pyradiomics_case("lung2")
    img = sitk.ReadImage(str(img_p))
    hu = sitk.GetArrayFromImage(img).astype(np.float32)
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(lab_p)))
    sp = tuple(reversed(img.GetSpacing()))
    cache = _cache_dir() / "lung2_lungmask.npz"
    if cache.is_file():
        lungs = np.load(cache)["lungs"]
    else:
        lungs = lung_mask(hu, sp, img.GetDirection()).lungs
        tmp = cache.with_name(f"lung2_lungmask.{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, lungs=lungs)
        tmp.replace(cache)
    return hu, sp, img.GetOrigin(), img.GetDirection(), lab, lungs


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    from skimage.transform import downscale_local_mean

    return downscale_local_mean(a.astype(np.float32), (1, f, f)).astype(np.float32)


def lung2_truth(in_plane: int = 256, slab: tuple = LUNG2_SLAB) -> Truth:
    """A slab of lung2 as a truth volume.

    Parameters
    ----------
    in_plane : int
        Matrix size: 512 (native, 0.63 mm) or a divisor of it (block mean, e.g. 256 at 1.25 mm).
    slab : (first, stop)
        Slice range of the 61-slice volume.
    """
    hu, sp, origin, direction, lab, lungs = _lung2_full()
    n = hu.shape[1]
    if in_plane <= 0 or n % in_plane:
        raise BadInputError(f"lung2 is {n} pixels wide; in_plane must divide it, got {in_plane}.")
    f = n // in_plane
    z0, z1 = slab
    if not 0 <= z0 < z1 <= hu.shape[0]:
        raise BadInputError(f"Slab {slab} is outside lung2's {hu.shape[0]} slices.")
    sub = hu[z0:z1]
    lm = lungs[z0:z1]
    lb = lab[z0:z1] > 0
    if f > 1:
        sub, lm, lb = _block_mean(sub, f), _block_mean(lm, f) >= 0.5, _block_mean(lb, f) >= 0.5
    spacing = (sp[0], sp[1] * f, sp[2] * f)
    org = np.asarray(origin, float) + np.asarray(direction, float).reshape(3, 3) @ np.array([0, 0, z0 * sp[0]])
    # the block mean's pixel centre moves by (f - 1) / 2 native pixels
    org = org + np.asarray(direction, float).reshape(3, 3) @ np.array([(f - 1) / 2 * sp[2], (f - 1) / 2 * sp[1], 0])
    vol = Volume(sub, spacing, tuple(org), direction, {"Modality": "CT"})
    return Truth(vol, lm, None, lb.astype(np.uint8),
                 {"anatomy": "lung2", "slab": [int(z0), int(z1)], "in_plane": int(in_plane),
                  "lung_mask": "quantify.lung on the whole unscanned lung2"})


def phantom_truth(seed: int, n: int = 256, pixel_mm: float = 0.7, n_slices: int = 16,
                  dz: float = 0.5) -> Truth:
    """A held-out procedural phantom (seed >= 1000) as a truth volume, without emphysema.

    Its body fills the ``n * pixel_mm`` field of view, so the pixel size sets the patient size.
    """
    if seed < 1000:
        raise BadInputError("Held-out phantoms have seeds >= 1000 (lower seeds are training data).")
    from ...simulate import make_phantom

    ph = make_phantom(seed, (n_slices, n, n), (dz, pixel_mm, pixel_mm), emphysema=0.0, nodules=0)
    vol = ph.volume if isinstance(ph.volume, Volume) else Volume(ph.volume, (dz, pixel_mm, pixel_mm))
    return Truth(Volume(vol.hu, vol.spacing, vol.origin, vol.direction, {"Modality": "CT"}),
                 np.asarray(ph.masks["lungs"], bool), None, None,
                 {"anatomy": f"phantom-{seed}", "in_plane": int(n), "pixel_mm": float(pixel_mm)})


def scale_patient(truth: Truth, factor: float) -> Truth:
    """The same anatomy ``factor`` times larger (or smaller) in-plane, in the same field of view.

    Pixels that come from outside the original field of view are air (-1000 HU); the
    masks follow by nearest neighbour.
    """
    if not 0.3 <= factor <= 3:
        raise BadInputError(f"Patient scale factor must be in [0.3, 3], got {factor}.")
    if factor == 1:
        return truth
    hu = truth.volume.hu
    n = hu.shape[1]
    c = (n - 1) / 2.0
    mat = np.diag([1.0, 1.0 / factor, 1.0 / factor])
    off = np.array([0.0, c - c / factor, c - c / factor])

    def zoom(a, order, cval):
        return ndi.affine_transform(a, mat, off, order=order, mode="constant", cval=cval)

    out_hu = zoom(hu.astype(np.float32), 1, -1000.0)
    m = lambda a: None if a is None else zoom(np.asarray(a, np.uint8), 0, 0)  # noqa: E731
    lung, emph, lab = m(truth.lung), m(truth.emphysema), m(truth.labels)
    info = dict(truth.info, patient_scale=float(factor))
    return Truth(truth.volume.with_array(out_hu), None if lung is None else lung.astype(bool),
                 None if emph is None else emph.astype(bool), lab, info)


def _diameters(rng, n, lo=1.0, hi=30.0, alpha=1.5):
    """Truncated Pareto diameters (pdf ~ D^-(alpha+1) on [lo, hi]): many small, a few large."""
    u = rng.random(n)
    a, b = lo ** -alpha, hi ** -alpha
    return (a - u * (a - b)) ** (-1.0 / alpha)


def insert_emphysema(truth: Truth, fraction: float, seed: int, size_range=(1.0, 30.0), alpha: float = 1.5,
                     parenchyma_hu: float = -600.0) -> Truth:
    """Insert emphysema-like low-attenuation clusters into the lung parenchyma.

    Each cluster is an ellipsoid (axes 0.7-1.3 x its diameter) of one density drawn from
    -1000..-960 HU; it replaces parenchyma (truth below ``parenchyma_hu``) inside the lung
    mask, vessels and airway walls through it are kept. Along z every truth voxel takes
    the fraction of its slab the cluster covers (partial volume of thick slices).

    Parameters
    ----------
    truth : Truth
        With a lung mask.
    fraction : float
        Inserted cluster volume as a fraction of the lung volume (0..0.3). The emphysema
        index a scan then shows is lower for small clusters (partial volume, blur).
    seed : int
    size_range : (min, max) diameter in mm
    alpha : float
        Pareto exponent of the diameters.

    Returns
    -------
    Truth
        New volume; ``emphysema`` = voxels at least half covered by a cluster;
        ``info["emphysema_inserted"]`` holds the counts and sizes.
    """
    if truth.lung is None or not truth.lung.any():
        raise BadInputError("Emphysema needs a lung mask with lung in it.")
    if not 0 <= fraction <= 0.3:
        raise BadInputError(f"Emphysema fraction must be in [0, 0.3], got {fraction}.")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xE3F])
    vol = truth.volume
    hu = vol.hu.astype(np.float32).copy()
    dz, dy, dx = vol.spacing
    lung = np.asarray(truth.lung, bool)
    allowed = lung & (hu < parenchyma_hu)
    centres = np.argwhere(ndi.binary_erosion(allowed, np.ones((1, 3, 3), bool)))
    occupancy = np.zeros(hu.shape, np.float32)
    goal = fraction * lung.sum()
    sizes = []
    sub = 8  # z sub-samples per truth voxel
    while occupancy[allowed].sum() < goal and len(sizes) < 100000 and len(centres):
        d = float(_diameters(rng, 1, *size_range, alpha)[0])
        cz, cy, cx = centres[rng.integers(len(centres))]
        ax = d / 2 * rng.uniform(0.7, 1.3, 3)
        phi = rng.uniform(0, np.pi)
        hz, hy, hx = int(np.ceil(ax[0] / dz)) + 1, int(np.ceil(ax.max() / dy)) + 1, int(np.ceil(ax.max() / dx)) + 1
        zs = slice(max(cz - hz, 0), min(cz + hz + 1, hu.shape[0]))
        ys = slice(max(cy - hy, 0), min(cy + hy + 1, hu.shape[1]))
        xs = slice(max(cx - hx, 0), min(cx + hx + 1, hu.shape[2]))
        z = (np.arange(zs.start, zs.stop)[:, None] - cz + (np.arange(sub) + 0.5) / sub - 0.5) * dz  # [nz, sub]
        y = (np.arange(ys.start, ys.stop) - cy) * dy
        x = (np.arange(xs.start, xs.stop) - cx) * dx
        u = y[:, None] * np.cos(phi) + x[None, :] * np.sin(phi)
        v = -y[:, None] * np.sin(phi) + x[None, :] * np.cos(phi)
        r2 = (u / ax[1]) ** 2 + (v / ax[2]) ** 2  # [ny, nx]
        inside = (z[:, :, None, None] / ax[0]) ** 2 + r2[None, None] <= 1.0
        occ = inside.mean(axis=1)  # [nz, ny, nx] covered fraction of each voxel along z
        block = occupancy[zs, ys, xs]
        np.maximum(block, occ, out=block)
        sizes.append(d)
        occupancy[zs, ys, xs] = block
        value = float(rng.uniform(-1000.0, -960.0))
        w = occ * allowed[zs, ys, xs]
        hu[zs, ys, xs] = (1 - w) * hu[zs, ys, xs] + w * np.minimum(value, hu[zs, ys, xs])
    occupancy *= allowed
    sizes = np.asarray(sizes)
    info = dict(truth.info, emphysema_inserted={
        "fraction_goal": float(fraction), "fraction": float(occupancy.sum() / lung.sum()),
        "clusters": int(len(sizes)), "diameter_mm_median": float(np.median(sizes)) if len(sizes) else None,
        "diameter_mm_max": float(sizes.max()) if len(sizes) else None, "seed": int(seed),
        "size_range_mm": list(size_range), "pareto_alpha": alpha})
    return Truth(vol.with_array(hu), lung, occupancy >= 0.5, truth.labels, info)
