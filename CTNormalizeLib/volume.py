"""The in-memory CT volume: HU voxels plus geometry and the DICOM tags that matter."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

#: ``Volume.meta`` keys CTNormalize writes into NRRD/MHA headers of its outputs and reads back: the run's
#: one-line provenance (method, source -> target), the output texture (``clean``, ``target`` or
#: ``source``), the run's target protocol (a spec) and the noise it set for it (HU; ``info`` compares
#: the scan with both).
PROVENANCE_KEYS = ("ctnormalize", "ctnormalize_texture", "ctnormalize_target", "ctnormalize_target_noise_hu")


@dataclass
class Volume:
    """A CT volume in Hounsfield units with its geometry.

    Attributes
    ----------
    hu : np.ndarray
        float32 array ``[z, y, x]`` in HU.
    spacing : tuple of float
        Voxel size in mm **in array order** ``(z, y, x)``.
    origin : tuple of float
        Physical position (LPS, mm) of voxel ``[0, 0, 0]``, in ITK order ``(x, y, z)``.
    direction : tuple of float
        9 direction cosines, row-major, in ITK order (as ``SimpleITK.Image.GetDirection()``).
    meta : dict
        DICOM tags that matter (``Modality``, ``Manufacturer``, ``ConvolutionKernel``,
        ``SliceThickness``, ``SpacingBetweenSlices``, ``KVP``, ``Exposure``,
        ``XRayTubeCurrent``, ``CTDIvol``), as strings, plus ``source_path`` when read
        from disk. Absent tags are absent keys.
    """

    hu: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.hu = np.asarray(self.hu, dtype=np.float32)
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = tuple(float(d) for d in self.direction)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)

    def with_array(self, hu: np.ndarray, spacing=None, **changes) -> "Volume":
        """A copy with new voxels (and optionally a new spacing); meta is copied.

        When the z spacing changes, the origin stays at the centre of the first
        slice of the old grid, which keeps the physical extent aligned for
        slice-profile resampling.
        """
        return replace(
            self,
            hu=np.asarray(hu, dtype=np.float32),
            spacing=self.spacing if spacing is None else tuple(spacing),
            meta=dict(self.meta),
            **changes,
        )


def grid_differences(size_xyz, spacing_xyz, origin, direction, reference: Volume) -> list[str]:
    """How a grid differs from ``reference``'s: one phrase per differing property, [] when the same.

    Parameters
    ----------
    size_xyz, spacing_xyz, origin, direction : sequences of numbers
        The other grid in ITK order (as ``SimpleITK.Image.GetSize()`` etc.).
    reference : Volume
        The grid compared against (named "CT" in the phrases).
    """
    problems = []
    size = tuple(reversed(reference.hu.shape))
    if tuple(int(n) for n in size_xyz) != size:
        problems.append(f"size {tuple(int(n) for n in size_xyz)} vs CT {size}")
    sp_ref = tuple(reversed(reference.spacing))
    if not np.allclose(spacing_xyz, sp_ref, rtol=1e-3, atol=1e-4):
        problems.append(f"spacing {tuple(round(float(s), 4) for s in spacing_xyz)} vs CT "
                        f"{tuple(round(s, 4) for s in sp_ref)}")
    tol = 1e-2 * max(sp_ref)
    if not np.allclose(origin, reference.origin, atol=max(tol, 1e-3)):
        problems.append(f"origin {tuple(round(float(o), 3) for o in origin)} vs CT "
                        f"{tuple(round(o, 3) for o in reference.origin)}")
    if not np.allclose(direction, reference.direction, atol=1e-4):
        problems.append("direction cosines differ")
    return problems


def volume_grid_differences(volume: Volume, reference: Volume) -> list[str]:
    """:func:`grid_differences` of two volumes (``volume`` against ``reference``)."""
    return grid_differences(tuple(reversed(volume.hu.shape)), tuple(reversed(volume.spacing)), volume.origin,
                            volume.direction, reference)
