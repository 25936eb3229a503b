"""Put paired volumes on one grid: the target's z grid over the common z extent.

Scans simulated from one truth share their in-plane grid and origin and differ in
z spacing (docs/DEVELOPING.md, "z grids"). Every paired metric compares voxels on
the **target's grid**: a thick source or output is linearly interpolated along z
onto the target's slice positions, and all volumes are cropped to the z range they
all cover. In-plane grids must already match.
"""

from __future__ import annotations

import numpy as np

from ..errors import BadInputError
from ..imaging.zgrid import fractional_index, resample_z, slice_positions
from ..volume import Volume


def to_target_grid(target: Volume, *others: Volume | None, tol: float = 1e-3):
    """Resample ``others`` onto ``target``'s z grid over the z extent all of them cover.

    Parameters
    ----------
    target : Volume
        Defines the grid (its slices inside the common extent are kept as they are).
    *others : Volume or None
        Same in-plane grid as ``target``; ``None`` entries pass through as ``None``.
    tol : float
        Slack (mm) when testing whether a target slice lies inside another volume's extent.

    Returns
    -------
    (target_cropped, [other_on_grid, ...], info)
        ``info`` records the z range kept and which inputs were interpolated.

    Raises
    ------
    BadInputError
        When the in-plane shapes differ or the volumes share no z extent.
    """
    zt = slice_positions(target)
    lo, hi = zt.min() - tol, zt.max() + tol
    for v in others:
        if v is None:
            continue
        if v.shape[1:] != target.shape[1:]:
            raise BadInputError(
                f"In-plane grids differ: {v.shape[1:]} vs the target's {target.shape[1:]}; "
                "resample the volumes to one in-plane grid first.")
        if not np.allclose(v.spacing[1:], target.spacing[1:], rtol=1e-3):
            raise BadInputError(
                f"In-plane spacings differ: {v.spacing[1:]} vs the target's {target.spacing[1:]}.")
        z = slice_positions(v)
        lo, hi = max(lo, z.min() - tol), min(hi, z.max() + tol)
    keep = (zt >= lo) & (zt <= hi)
    if not keep.any():
        raise BadInputError("The volumes share no z extent, so they cannot be compared voxel by voxel.")
    zk = zt[keep]
    tgt = target.with_array(target.hu[keep])
    first = int(np.argmax(keep))
    if first:
        d = np.asarray(target.direction, dtype=float).reshape(3, 3)[:, 2]
        tgt.origin = tuple(np.asarray(target.origin) + first * target.spacing[0] * d)
    out, interpolated = [], []
    for v in others:
        if v is None:
            out.append(None)
            interpolated.append(None)
            continue
        z = slice_positions(v)
        idx = fractional_index(z, zk)
        same = len(z) >= len(zk) and np.allclose(v.spacing[0], target.spacing[0]) and \
            np.allclose(idx % 1.0, 0.0, atol=1e-3)
        arr = v.hu[np.rint(idx).astype(int)] if same else resample_z(v.hu, z, zk)
        out.append(tgt.with_array(arr))
        interpolated.append(not same)
    info = {"grid": "target", "z_range_mm": [float(zk.min()), float(zk.max())],
            "n_slices": int(len(zk)), "target_slices_dropped": int((~keep).sum()),
            "target_slices_dropped_before": first,
            "interpolated": interpolated,
            "note": "source/output/replicate linearly interpolated along z onto the target's "
                    "slice positions, over the z extent all volumes cover"}
    return tgt, out, info
