"""Inside the phantom's lungs: parenchyma texture, fissures, vessel and airway trees, nodules."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .anatomy import Anatomy
from .geometry import Grid, draw_lobulated, draw_tube, grf

# Radius exponent of the vessel trees' bifurcations: Murray's ideal is 3, measured pulmonary arterial
# trees give about 2.3-2.7 (Huang et al., J Appl Physiol 1996). With 3 the trees stayed thick out to the
# periphery and the healthy mean lung density came out near -700..-800 HU instead of about -850.
VESSEL_EXPONENT = 2.4


def parenchyma(shape, U, V, A: Anatomy, grid: Grid, pix, pix_z, rng) -> np.ndarray:
    """Lung HU between the vessels: base + dependent gradient + correlated texture + fissures, in [-935, -700]."""
    nz = shape[0]
    step_mm = grid.step
    Vz = np.broadcast_to(V[None], shape)
    par = (A.parenchyma + A.gradient * np.clip(Vz / A.b, -1, 1)
           + 6.0 * grf(shape, 1.0 / step_mm, rng) + 5.0 * grf(shape, 5.0 / step_mm, rng)).astype(np.float32)
    # Fissures: thin oblique sheets, slightly denser.
    for side, tilt, off in ((-1, 0.9, rng.uniform(-20, 20)), (1, 0.85, rng.uniform(-20, 20))):
        zeta = (A.zeta_lo + np.arange(nz) * pix_z)[:, None, None]
        d = Vz * np.cos(tilt) - zeta * np.sin(tilt) + 0.5 * np.abs(U)[None] - off
        sheet = np.exp(-0.5 * (d / max(0.5, 0.35 * pix)) ** 2) * (np.sign(U)[None] == side)
        par += (120.0 * sheet).astype(np.float32)
    np.clip(par, -935.0, -700.0, out=par)
    return par


def grow_tree(start, points, radius, rng, segs, min_points=2, min_radius=0.0, depth=0, max_depth=40, exponent=3.0):
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
        grow_tree(end, points[sel], radius * (m / n) ** (1 / exponent), rng, segs, min_points, min_radius,
                  depth + 1, max_depth, exponent)


def draw_trees(vessel, wall, lumen, lung_mm, grid: Grid, A: Anatomy, pix, rng):
    """Two vessel trees per lung and the airways (trachea, main bronchi, a few generations), in place.

    ``lung_mm``: adult-mm coordinates of the lung voxels; the trees fill them.
    """
    zeta_hi = A.zeta_lo + (grid.shape[0] - 1) * grid.step[0]
    v_tr = A.trachea_v
    for side in (-1, 1):
        mine = lung_mm[np.sign(lung_mm[:, 2]) == side]
        if len(mine) < 20:
            continue
        for hv, hz, r0 in ((v_tr + 18.0, -12.0, 7.0), (v_tr + 30.0, -45.0, 6.5)):
            k = min(len(mine), 1500)
            pts = mine[rng.choice(len(mine), k, replace=False)] + rng.uniform(-0.5, 0.5, (k, 3)) * grid.step
            root = np.array([np.clip(hz, A.zeta_lo - 25, zeta_hi + 25), hv, side * 42.0])
            segs = []
            grow_tree(root, pts, r0, rng, segs, min_points=2, exponent=VESSEL_EXPONENT)
            for p0, p1, ra, rb in segs:
                draw_tube(vessel, grid, p0, p1, ra, rb, pix)
        # Airways follow the arteries' territories (bronchovascular bundles), a few generations.
        k = min(len(mine), 400)
        pts = mine[rng.choice(len(mine), k, replace=False)]
        carina = np.array([0.0, v_tr, 0.0])
        hilum = np.array([np.clip(-18.0, A.zeta_lo - 25, zeta_hi + 25), v_tr + 8.0, side * 38.0])
        segs = [(carina, hilum, 6.5, 5.5)]
        grow_tree(hilum, pts, 4.6, rng, segs, min_points=20, min_radius=max(1.4, 0.7 * pix), max_depth=4)
        if side == 1:
            segs.append((np.array([zeta_hi + 40.0, v_tr, 0.0]), carina, 8.5, 8.0))  # trachea
        for p0, p1, ra, rb in segs:
            tw = lambda r: max(0.18 * r + 0.5, 1.2 * pix)  # noqa: E731
            draw_tube(wall, grid, p0, p1, ra + tw(ra), rb + tw(rb), pix)
            draw_tube(lumen, grid, p0, p1, ra, rb, pix)


def place_nodules(hu, lungs_region, tex, n, grid: Grid, spacing, pix, rng):
    """Paint up to ``n`` lobulated nodules (solid, part-solid, ground-glass) well inside the lungs, in place.

    Returns ``(info list, occupancy 0..1, int16 labels)``.
    """
    shape = hu.shape
    scale = grid.scale
    step_mm = grid.step
    nod_info = []
    nod_occ = np.zeros(shape, np.float32)
    nod_labels = np.zeros(shape, np.int16)
    if n <= 0:
        return nod_info, nod_occ, nod_labels
    # Distance to the lung boundary on a 2x coarser grid (fast; nodule centres need no more).
    edt = ndimage.distance_transform_edt(lungs_region[::2, ::2, ::2], sampling=step_mm * 2)
    for i in range(n):
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
        draw_lobulated(one, grid, c_mm, diam / 2, lobes, rng.uniform(0.05, 0.18, 5), pix)
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
            draw_lobulated(core, grid, c_mm, rc, lobes, rng.uniform(0.05, 0.15, 5), pix)
            hu[:] = hu * (1 - core) + (35.0 + 8.0 * tex) * core
            entry["solid_diameter_mm"] = round(2 * rc * scale, 2)
        np.maximum(nod_occ, f, out=nod_occ)
        nod_labels[(f > 0.5) & (nod_labels == 0)] = i + 1
        nod_info.append(entry)
    return nod_info, nod_occ, nod_labels
