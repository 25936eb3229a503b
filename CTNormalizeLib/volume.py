"""The in-memory CT volume: HU voxels plus geometry and the DICOM tags that matter."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


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
