"""Airways of a lung segmentation: the trachea and main bronchi, and bronchi seen as rings.

The trachea is found as a small central air disc in the most superior slices and tracked
slice by slice downwards while each airway cross-section stays small (it stops where a
bronchus opens into the lung in that slice). Inside the lungs, a filled-in ring (a wall)
around a small dark lumen is a bronchus.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .morphology import disk

AIRWAY_HU = -900.0


def find_trachea(cand, body, spacing, top_first: bool):
    """Seed slice index and 2D mask of the trachea in the most superior slices, or None."""
    nz = cand.shape[0]
    order = range(nz - 1, -1, -1) if top_first else range(nz)
    area_px = float(spacing[1] * spacing[2])
    max_slices = max(3, int(np.ceil(40.0 / float(spacing[0]))))
    seen = 0
    for z in order:
        if not cand[z].any():
            continue
        seen += 1
        if seen > max_slices:
            break
        xs = np.nonzero(body[z].any(axis=0))[0]
        if xs.size == 0:
            continue
        body_cx = 0.5 * (xs[0] + xs[-1])
        width = xs[-1] - xs[0] + 1
        lab, n = ndi.label(cand[z])
        best, best_area = None, 0.0
        for i, sl in enumerate(ndi.find_objects(lab), start=1):
            comp = lab[sl] == i
            area = comp.sum() * area_px
            if not (20.0 <= area <= 1000.0):
                continue
            cx = sl[1].start + np.nonzero(comp)[1].mean()
            if abs(cx - body_cx) > 0.12 * width:
                continue
            if area > best_area:
                best, best_area = (lab == i), area
        if best is not None:
            return z, best
    return None


def track_airways(cand, sm, spacing, seed_z: int, seed: np.ndarray, top_first: bool) -> np.ndarray:
    """Follow the trachea and main bronchi downwards while their 2D cross-sections stay small.

    The lumen is tracked on a strict threshold (smoothed HU < -900) so that a bronchus
    joined to the parenchyma by partial volume still reads as its own disc; the removed
    airway is that disc grown by ~2 mm inside the lung candidate (its partial-volume rim).
    Tracking stops where a cross-section grows past 2.5x the trachea's (it opens into the
    lung), beyond 4 branches, or 30 mm below the carina (main bronchi only).
    """
    airways = np.zeros_like(cand)
    ref_area = float(seed.sum())
    step = -1 if top_first else 1
    # Thick slices move an oblique bronchus sideways between slices: allow ~5 mm.
    reach = disk(max(1.0, 5.0 / float(spacing[1])))
    rim = disk(max(1.0, 2.0 / float(spacing[1])))
    below_carina = int(np.ceil(30.0 / float(spacing[0])))
    carina_z = None
    current = seed
    airways[seed_z] = ndi.binary_dilation(seed, structure=rim) & cand[seed_z]
    z = seed_z + step
    while 0 <= z < cand.shape[0]:
        near = ndi.binary_dilation(current, structure=reach)
        # Strict lumen first; a narrow lumen (larynx, partial volume) only passes at -400.
        for lumen in (cand[z] & (sm[z] < AIRWAY_HU), cand[z]):
            lab, n = ndi.label(lumen)
            ids = np.unique(lab[near & (lab > 0)])
            sizes = np.bincount(lab.ravel(), minlength=n + 1)
            ids = [i for i in ids if sizes[i] <= 2.5 * ref_area]
            # noise splits off small fragments of a lumen: only sizeable pieces are branches
            branches = [i for i in ids if sizes[i] >= 0.15 * ref_area]
            if 1 <= len(branches) <= 4:
                break
        if not 1 <= len(branches) <= 4:
            break
        nxt = np.isin(lab, ids)
        if len(branches) >= 2 and carina_z is None:
            # the carina: two sizeable lumens even after merging fragments closer than ~2 mm
            glab, gn = ndi.label(ndi.binary_dilation(nxt, structure=rim))
            gsz = np.bincount(glab[nxt], minlength=gn + 1)[1:]
            if np.count_nonzero(gsz >= 0.3 * ref_area) >= 2:
                carina_z = z
        if carina_z is not None and abs(z - carina_z) > below_carina:
            break
        airways[z] = ndi.binary_dilation(nxt, structure=rim) & cand[z]
        current = nxt
        z += step
    return airways


def airway_rings(raw: np.ndarray, filled: np.ndarray, sm: np.ndarray, spacing) -> np.ndarray:
    """Bronchi inside the lung: filled-in rings (the wall) around a small dark lumen.

    Hole filling turns vessels (solid discs) and bronchial walls (rings) into lung; a ring
    that encloses a small, dark (< -900 HU) lumen is a bronchus, and wall + lumen are taken
    out again, as densitometry excludes the airways.
    """
    out = np.zeros_like(raw)
    px = float(spacing[1] * spacing[2])
    max_lumen = max(2, int(100.0 / px))  # lumen up to ~11 mm across
    for z in range(raw.shape[0]):
        holes = filled[z] & ~raw[z]
        if not holes.any():
            continue
        lab, n = ndi.label(holes)
        for i, sl in enumerate(ndi.find_objects(lab), start=1):
            sl = (slice(max(0, sl[0].start - 1), sl[0].stop + 1), slice(max(0, sl[1].start - 1), sl[1].stop + 1))
            comp = lab[sl] == i
            whole = ndi.binary_fill_holes(comp)
            inner = whole & ~comp
            k = int(inner.sum())
            if 0 < k <= max_lumen and float(sm[z][sl][inner].mean()) < AIRWAY_HU:
                out[z][sl] |= whole
    return out
