"""Writing volumes: NRRD, NIfTI, MHA through SimpleITK (NRRD through pynrrd without it), atomically, verified, never over the input.

The write runs in a worker thread (:mod:`CTNormalizeLib.interruptible`) so SIGTERM stays
prompt during a long compressed write. Before the temp file is moved into place it is
verified: the header is read back (size), the data part must hold every voxel (SimpleITK's
NIfTI writer reports a failed write on stderr without raising, leaving a truncated file),
and a small output is read back whole and compared.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

import numpy as np

from ._sitk import available as sitk_available
from ._sitk import sitk

from ..errors import BadInputError, DiskFullError, InternalError
from ..interruptible import call_interruptibly
from ..volume import PROVENANCE_KEYS, Volume
from .atomic import atomic_output
from .dicom import META_TAGS
from .read import file_format

#: Outputs up to this many raw bytes are read back whole and compared after writing.
READ_BACK_MAX_BYTES = 64 * 1024 * 1024
_NO_SPACE_WORDS = ("No space left", "File too large", "Disk quota", "file size limit", "wrote only")

_WRITABLE = {"NRRD": (".nrrd",), "NIfTI": (".nii", ".nii.gz"), "MetaImage": (".mha",)}
#: the written formats whose header keeps the output's tags and provenance keys (NIfTI keeps none)
TAGGED_FORMATS = ("NRRD", "MetaImage")
_INT16 = (np.iinfo(np.int16).min, np.iinfo(np.int16).max)


def volume_to_image(volume: Volume, dtype=np.float32, array: Optional[np.ndarray] = None) -> sitk.Image:
    """A :class:`Volume` as a SimpleITK image with its geometry (spacing reversed to x,y,z).

    ``array`` replaces the voxels (same shape; e.g. the rounded int16 ones, which a Volume, always
    float32, cannot hold).
    """
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.hu if array is None else array, dtype=dtype))
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
        why = _int16_misfit(hu)
        if why:
            raise BadInputError(f"The volume has {why}; write float32 instead.")
        return np.int16
    raise BadInputError(f"Output dtype must be 'float32', 'int16' or 'auto', not {dtype!r}.")


#: How a normalized volume can be stored: integer HU (as CT is stored, compressed) or float32 (full precision).
OUTPUT_TYPES = ("int16", "float32")
DEFAULT_OUTPUT_TYPE = "int16"


def check_output_type(requested: str, dicom: bool, other_formats: str) -> None:
    """Refuse ``--output-type float32`` for a derived DICOM series, which stores integers.

    ``other_formats``: what the command offers instead (named in the message).
    """
    if dicom and requested == "float32":
        raise BadInputError("--output-type float32 is for volume files: a derived DICOM series stores whole HU "
                            f"(leave --output-type out, or {other_formats}).")


NIFTI_DROPS_PROVENANCE = "NIFTI_DROPS_PROVENANCE"


def header_loss_warning(path) -> Optional[dict]:
    """A warning when ``path`` is a volume file whose header keeps no text (NIfTI): a normalized output's
    provenance (``ctnormalize``, its texture, the target's tags) is not stored with it; None for the
    :data:`TAGGED_FORMATS` and for what is not a volume file (a DICOM series folder)."""
    fmt = file_format(path)
    if fmt is None or fmt in TAGGED_FORMATS:
        return None
    return {"code": NIFTI_DROPS_PROVENANCE,
            "message": ("NIfTI keeps no header text: this output will not say that CTNormalize made it, with which "
                        "texture or for which protocol, so `info`, `emphysema` and `radiomics` cannot warn about it "
                        "later (a clean-texture output measured as a scan). Write .nrrd or .mha to keep that; "
                        "--report keeps the run's record beside it.")}


def output_type(hu: np.ndarray, requested: str = DEFAULT_OUTPUT_TYPE) -> tuple[str, Optional[dict]]:
    """The type to write a normalized volume as, and a warning when the request cannot be met.

    ``int16`` rounds to whole HU (what DICOM CT stores; the rounding error, at most 0.5 HU, is far
    below CT noise) and compresses (NRRD, MHA, .nii.gz), a quarter of float32's size on lung1; a volume with values beyond
    the int16 range or not finite is written as float32 with an ``OUTPUT_FLOAT32`` warning.
    """
    if requested not in OUTPUT_TYPES:
        raise BadInputError(f"Output type must be one of {', '.join(OUTPUT_TYPES)}, not {requested!r}.")
    if requested == "float32":
        return "float32", None
    why = _int16_misfit(hu)
    if not why:
        return "int16", None
    return "float32", {"code": "OUTPUT_FLOAT32",
                       "message": f"The output has {why}: written as float32 instead of whole HU (int16)."}


def _int16_misfit(hu: np.ndarray) -> Optional[str]:
    """Why ``hu`` cannot be stored as int16 (values not finite, or beyond its range); None when it can."""
    if not np.all(np.isfinite(hu)):
        return "values that are not finite"
    lo, hi = (float(np.min(hu)), float(np.max(hu))) if hu.size else (0.0, 0.0)
    return None if _INT16[0] <= lo and hi <= _INT16[1] else f"values {lo:g}..{hi:g} beyond int16"


def as_written(volume: Volume, dtype: str) -> Volume:
    """``volume`` with the values a file of ``dtype`` holds (int16: rounded), so what is measured is what is stored."""
    return volume.with_array(_rounded_int16(volume.hu)) if dtype == "int16" else volume


def _rounded_int16(hu: np.ndarray, slab: int = 16) -> np.ndarray:
    """``hu`` rounded to the nearest integer as int16, a slab at a time (no float copy of the whole volume)."""
    out = np.empty(hu.shape, np.int16)
    for z0 in range(0, hu.shape[0], slab):
        out[z0:z0 + slab] = np.rint(hu[z0:z0 + slab])
    return out


def check_volume_path(path) -> Path:
    """``path`` (``~`` expanded) if a volume can be written there by name, else BadInputError."""
    p = Path(path).expanduser()
    fmt = file_format(p)
    low = p.name.lower()
    if fmt is None or not any(low.endswith(s) for s in _WRITABLE.get(fmt, ())):
        raise BadInputError(
            f"Cannot write {p.name!r}: use .nrrd, .nii, .nii.gz or .mha (single-file formats), or, for a DICOM "
            f"series, a folder: end it with / or add --output-format dicom."
        )
    if os.path.isdir(p):
        raise BadInputError(f"Output {p} is a folder; give a file name.")
    return p


def write_volume(volume: Volume, path, dtype: Optional[str] = "auto", compress: Optional[bool] = None,
                 write_tags: bool = False) -> Path:
    """Write ``volume`` to a NRRD, NIfTI or MHA file, atomically.

    Geometry (spacing, origin, direction, oblique included) is written as is; NRRD and
    MHA store it in full precision, NIfTI in float32 (its format). NRRD/MHA headers get
    ``Modality`` and the ``ctnormalize`` provenance string from ``meta``; with
    ``write_tags`` all the acquisition tags of ``meta`` too (``ConvolutionKernel:=B70f`` ...),
    which a later :func:`read_volume` picks up. They are off by default because after a
    normalization the input's kernel/thickness tags no longer describe the voxels; normalized
    outputs write the tags that do
    (:meth:`~CTNormalizeLib.contracts.derivation.Derivation.output_meta`).

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
    p = check_volume_path(path)
    fmt = file_format(p)
    low = p.name.lower()
    src = volume.meta.get("source_path")
    if src:
        s = Path(src).expanduser().resolve()
        if p.resolve() == s or (p.exists() and s.exists() and p.resolve().samefile(s)):
            raise BadInputError(f"Refusing to overwrite the input {s}; choose another output path.")
    hu = volume.hu
    if hu.ndim != 3:
        raise BadInputError(f"Can only write 3D volumes, got shape {hu.shape}.")
    out_dtype = _choose_dtype(hu, dtype)
    if compress is None:
        compress = out_dtype is np.int16
    use_comp = compress if fmt != "NIfTI" else low.endswith(".gz")
    if fmt == "NRRD" and not sitk_available():
        data = _rounded_int16(hu) if out_dtype is np.int16 else hu
        return _write_nrrd_without_sitk(volume.with_array(data), p, out_dtype, bool(use_comp), write_tags)
    image = volume_to_image(volume, dtype=out_dtype, array=_rounded_int16(hu) if out_dtype is np.int16 else None)
    if fmt in TAGGED_FORMATS:
        names = list(META_TAGS) if write_tags else ["Modality"]
        for name in names + list(PROVENANCE_KEYS):
            v = volume.meta.get(name)
            if v is not None and str(v).strip():
                image.SetMetaData(name, str(v).strip())
    return write_image(image, p, compress=bool(use_comp))


def _write_nrrd_without_sitk(volume: Volume, p: Path, out_dtype, compress: bool, write_tags: bool) -> Path:
    """NRRD through pynrrd (a process without SimpleITK), verified like :func:`write_image`."""
    from .filecheck import _check_payload
    from .nrrd_lite import read_nrrd, write_nrrd

    names = list(META_TAGS) if write_tags else ["Modality"]
    meta = {n: str(volume.meta[n]).strip() for n in names + list(PROVENANCE_KEYS)
            if volume.meta.get(n) is not None and str(volume.meta[n]).strip()}
    expected = np.asarray(volume.hu, dtype=out_dtype)

    def verify(tmp: Path):
        try:
            _check_payload(tmp, "NRRD", int(expected.size), int(expected.nbytes))
        except BadInputError:
            raise _incomplete(p, tmp, expected.nbytes) from None
        if expected.nbytes <= READ_BACK_MAX_BYTES:
            back = read_nrrd(tmp).hu
            if back.shape != expected.shape or not np.array_equal(back, expected, equal_nan=True):
                raise InternalError(f"Writing {p} failed: the file read back differs from the volume written.")

    with atomic_output(p, verify=verify, private_dir=True) as tmp:
        try:
            call_interruptibly(write_nrrd, volume, tmp, dtype=out_dtype, compress=compress, meta=meta)
        except OSError as exc:
            raise _write_error(p, RuntimeError(str(exc)), Path(tmp).parent) from None
    return p


def write_image(image: sitk.Image, path, compress: bool = True) -> Path:
    """Write any SimpleITK image (a labelmap, a mask) atomically and verified; returns the path.

    The format comes from the extension (NRRD, NIfTI, MHA). Raises :class:`DiskFullError`
    (exit 4) when the disk is full or the file would exceed the allowed size, and a
    one-sentence :class:`BadInputError` when the path cannot be written.
    """
    p = Path(path).expanduser()
    fmt = file_format(p)
    if fmt is None:
        raise BadInputError(f"Cannot write {p.name!r}: use .nrrd, .nii, .nii.gz or .mha.")
    verify = _verifier(p, image, fmt, sitk.GetArrayViewFromImage(image))
    with atomic_output(p, verify=verify, private_dir=True) as tmp:
        try:
            call_interruptibly(sitk.WriteImage, image, str(tmp), useCompression=bool(compress))
        except RuntimeError as exc:
            raise _write_error(p, exc, Path(tmp).parent) from None
    return p


def _no_space_left(folder: Path, probe_bytes: int = 1 << 20) -> bool:
    """Whether ``folder`` refuses ``probe_bytes`` more for lack of space or the process's file-size limit."""
    import errno
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder) as fh:
            fh.write(b"\0" * probe_bytes)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        return exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    return False


def _write_error(p: Path, exc: RuntimeError, folder: Optional[Path] = None):
    """One sentence for an ITK writer failure: no space (exit 4) or a refused path (2) or internal (1).

    ``folder``: where the file was being written; a failure whose text names no cause (a compressing
    writer says "failed to flush pending data") is a full disk when ``folder`` takes no more bytes.
    """
    text = str(exc)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    reason = next((ln.split("Reason:", 1)[1].strip() for ln in lines if "Reason:" in ln), lines[-1] if lines else text)
    reason = re.sub(r"^(\[\w+\]\s*)?\w+:\s*", "", reason).rstrip(".")  # "[nrrd] _nrrdGzWrite: failed ..."
    refused = "Permission denied" in text or "Read-only file system" in text
    if any(w.lower() in text.lower() for w in _NO_SPACE_WORDS) or "expected to write" in text \
            or (not refused and folder is not None and _no_space_left(folder)):
        return DiskFullError(f"Writing {p} failed: {reason}. The disk is full or the file is larger than allowed; "
                             "free some space or write elsewhere.")
    if refused:
        return BadInputError(f"Cannot write {p}: {reason}.")
    return InternalError(f"Writing {p} failed: {reason}.")


def _verifier(p: Path, image: sitk.Image, fmt: str, array: np.ndarray):
    """A check of the written temp file: header size, data size, and (small files) every voxel."""
    from .filecheck import _check_payload

    def verify(tmp: Path):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(tmp))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise _incomplete(p, tmp, array.nbytes) from None
        if tuple(reader.GetSize()) != tuple(image.GetSize()):
            raise _incomplete(p, tmp, array.nbytes)
        try:
            _check_payload(tmp, fmt, int(array.size), int(array.nbytes))
        except BadInputError:
            raise _incomplete(p, tmp, array.nbytes) from None
        if array.nbytes <= READ_BACK_MAX_BYTES:
            back_image = reader.Execute()
            back = sitk.GetArrayViewFromImage(back_image)
            if back.shape != array.shape or not np.array_equal(back, array, equal_nan=True):
                raise InternalError(f"Writing {p} failed: the file read back differs from the volume written.")

    return verify


def _incomplete(p: Path, tmp: Path, nbytes: int) -> DiskFullError:
    size = tmp.stat().st_size if tmp.exists() else 0
    return DiskFullError(f"Writing {p} failed: the written file is incomplete ({size} bytes for "
                         f"{nbytes} bytes of voxels). The disk is full or the file is larger than allowed; "
                         "free some space or write elsewhere.")
