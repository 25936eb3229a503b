"""SimpleITK, imported on first use: a process that only reads and writes NRRD can do without it.

``sitk`` stands in for the module (``sitk.ReadImage``...); :func:`available` says whether
it can be imported. Without SimpleITK, NRRD files go through :mod:`.nrrd_lite` (pynrrd);
every other format and DICOM need SimpleITK.
"""

from __future__ import annotations

import importlib


def available() -> bool:
    """True when SimpleITK can be imported."""
    try:
        importlib.import_module("SimpleITK")
        return True
    except ImportError:
        return False


class _Lazy:
    def __getattr__(self, name):
        return getattr(importlib.import_module("SimpleITK"), name)


sitk = _Lazy()
