"""The speed benchmarks' chest CT: a real scan made 512 x 512 x 300, and its portable pack.

pyradiomics' lung1 (512 x 512 x 48, 5 mm, real anatomy and noise) is interpolated along z
to 300 slices, rounded to integer HU as a scanner stores them, and labelled 1 mm apart
(the anatomy is stretched 1.27x along z; the voxel count and content are what matter for
speed). ``pack`` writes lung1 as a compressed ``.npz`` (about 12 MB) so that machines
without SimpleITK or the pyradiomics cache (the GPU check) build the same volume.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N_SLICES = 300
Z_SPACING = 1.0
DEFAULT_PACK = ROOT / ".gpucheck" / "lung1_int16.npz"


def lung1(pack=None):
    """lung1 as a :class:`Volume` (from ``pack`` if it exists, else from the pyradiomics cache)."""
    from CTNormalizeLib.volume import Volume

    pack = Path(pack) if pack else DEFAULT_PACK
    if pack.is_file():
        d = np.load(pack)
        return Volume(d["hu"].astype(np.float32), tuple(d["spacing"]), tuple(d["origin"]), tuple(d["direction"]),
                      {"Modality": "CT"})
    from CTNormalizeLib.io import read_volume
    from CTNormalizeLib.testdata import pyradiomics_case

    v = read_volume(pyradiomics_case("lung1")[0])
    v.meta = {"Modality": "CT"}
    return v


def chest(n_slices: int = N_SLICES, pack=None, in_plane: int | None = None):
    """The benchmark volume: lung1 on ``n_slices`` slices (integer HU, labelled ``Z_SPACING`` mm apart).

    ``in_plane`` crops the centre to that many pixels per side (quick runs).
    """
    from CTNormalizeLib.imaging.zgrid import resample_z

    base = lung1(pack)
    z_from = np.arange(base.shape[0], dtype=float)
    z_to = np.linspace(0.0, base.shape[0] - 1.0, n_slices)
    hu = np.round(resample_z(base.hu, z_from, z_to))
    if in_plane:
        c0 = (hu.shape[1] - in_plane) // 2
        c1 = (hu.shape[2] - in_plane) // 2
        hu = np.ascontiguousarray(hu[:, c0:c0 + in_plane, c1:c1 + in_plane])
    return base.with_array(hu.astype(np.float32), spacing=(Z_SPACING,) + tuple(base.spacing[1:]))


def pack(out=DEFAULT_PACK) -> Path:
    """Write lung1 (int16 HU and geometry) as a compressed ``.npz`` for machines without the cache."""
    v = lung1(pack=Path("/nonexistent"))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, hu=np.round(v.hu).astype(np.int16), spacing=np.array(v.spacing),
                        origin=np.array(v.origin), direction=np.array(v.direction))
    return out


if __name__ == "__main__":
    print(pack(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_PACK))
