"""Writing volumes: NRRD, NIfTI, MHA through SimpleITK, always atomically, never over the input."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from ._sitk import available as sitk_available
from ._sitk import sitk

from ..errors import BadInputError
from ..volume import Volume
from .atomic import atomic_output
from .dicom import META_TAGS
from .read import file_format

_WRITABLE = {"NRRD": (".nrrd",), "NIfTI": (".nii", ".nii.gz"), "MetaImage": (".mha",)}
_INT16 = (np.iinfo(np.int16).min, np.iinfo(np.int16).max)


def volume_to_image(volume: Volume, dtype=np.float32) -> sitk.Image:
    """A :class:`Volume` as a SimpleITK image with its geometry (spacing reversed to x,y,z)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.hu, dtype=dtype))
    image.SetSpacing(tuple(float(s) for s in reversed(volume.spacing)))
    image.SetOrigin(tuple(float(o) for o in volume.origin))
    image.SetDirection(tuple(float(d) for d in volume.direction))
    return image


def _choose_dtype(hu: np.ndarray, dtype: Optional[str]):
    if dtype in (None, "auto"):
        sample = hu.flat[:: max(1, hu.size // 4096)]
        if not np.array_equal(sample, np.round(sample)):  # a fractional value: float, no full-volume pass needed
            return np.float32
        if hu.size and np.all(np.isfinite(hu)) and hu.min() >= _INT16[0] and hu.max() <= _INT16[1] \
                and np.array_equal(hu, np.round(hu)):
            return np.int16
        return np.float32
    name = np.dtype(dtype).name
    if name == "float32":
        return np.float32
    if name == "int16":
        lo, hi = float(np.nanmin(hu)), float(np.nanmax(hu))
        if not np.all(np.isfinite(hu)) or lo < _INT16[0] or hi > _INT16[1]:
            raise BadInputError(f"Values {lo:g}..{hi:g} do not fit int16; write float32 instead.")
        return np.int16
    raise BadInputError(f"Output dtype must be 'float32', 'int16' or 'auto', not {dtype!r}.")


def write_volume(volume: Volume, path, dtype: Optional[str] = "auto", compress: Optional[bool] = None,
                 write_tags: bool = False) -> Path:
    """Write ``volume`` to a NRRD, NIfTI or MHA file, atomically.

    Geometry (spacing, origin, direction, oblique included) is written as is; NRRD and
    MHA store it in full precision, NIfTI in float32 (its format). NRRD/MHA headers get
    ``Modality`` and the ``ctnormalize`` provenance string from ``meta``; with
    ``write_tags`` all the acquisition tags of ``meta`` too (``ConvolutionKernel:=B70f`` ...),
    which a later :func:`read_volume` picks up. They are off by default because after a
    normalization the input's kernel/thickness tags no longer describe the voxels.

    Parameters
    ----------
    volume : Volume
    path : str or path-like
        ``.nrrd``, ``.nii``, ``.nii.gz`` or ``.mha``.
    dtype : {"auto", "float32", "int16"}
        ``auto``: int16 when every value is an integer in the int16 range, else float32.
        ``int16`` rounds to the nearest integer (error when out of range).
    compress : bool, optional
        zlib/gzip compression (``.nii`` is never compressed, ``.nii.gz`` always). Default:
        int16 data compressed, float32 not (gzip shrinks a float CT by under 20 % at about
        ten times the write time: 264 vs 315 MB and 20 s vs 2 s for 512x512x300 here).
    write_tags : bool
        Also store the acquisition tags of ``meta`` in NRRD/MHA headers.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    BadInputError
        Unsupported extension, a folder path, or ``path`` is the volume's own input
        (``meta["source_path"]``): inputs are never overwritten.
    """
    p = Path(path).expanduser()
    fmt = file_format(p)
    low = p.name.lower()
    if fmt is None or not any(low.endswith(s) for s in _WRITABLE.get(fmt, ())):
        raise BadInputError(
            f"Cannot write {p.name!r}: use .nrrd, .nii, .nii.gz or .mha (single-file formats)."
        )
    if p.is_dir():
        raise BadInputError(f"Output {p} is a folder; give a file name.")
    src = volume.meta.get("source_path")
    if src:
        s = Path(src).expanduser().resolve()
        if p.resolve() == s or (p.exists() and s.exists() and p.resolve().samefile(s)):
            raise BadInputError(f"Refusing to overwrite the input {s}; choose another output path.")
    hu = volume.hu
    if hu.ndim != 3:
        raise BadInputError(f"Can only write 3D volumes, got shape {hu.shape}.")
    out_dtype = _choose_dtype(hu, dtype)
    data = np.round(hu) if out_dtype is np.int16 else hu
    if compress is None:
        compress = out_dtype is np.int16
    use_comp = compress if fmt != "NIfTI" else low.endswith(".gz")
    if fmt == "NRRD" and not sitk_available():
        from .nrrd_lite import write_nrrd

        names = list(META_TAGS) if write_tags else ["Modality"]
        meta = {n: str(volume.meta[n]).strip() for n in names + ["ctnormalize"]
                if volume.meta.get(n) is not None and str(volume.meta[n]).strip()}
        with atomic_output(p) as tmp:
            write_nrrd(volume.with_array(data), tmp, dtype=out_dtype, compress=bool(use_comp), meta=meta)
        return p
    image = volume_to_image(volume.with_array(data) if out_dtype is np.int16 else volume, dtype=out_dtype)
    if fmt in ("NRRD", "MetaImage"):
        names = list(META_TAGS) if write_tags else ["Modality"]
        for name in names + ["ctnormalize"]:
            v = volume.meta.get(name)
            if v is not None and str(v).strip():
                image.SetMetaData(name, str(v).strip())
    with atomic_output(p) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=bool(use_comp))
    return p
