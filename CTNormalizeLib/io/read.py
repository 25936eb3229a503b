"""Reading CT volumes: NRRD, NIfTI, MHA/MHD, a DICOM file or a DICOM series folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ._sitk import available as sitk_available
from ._sitk import sitk

from ..errors import BadInputError
from ..interruptible import call_interruptibly
from ..volume import PROVENANCE_KEYS, Volume
from . import dicom
from .sitk_volume import image_to_volume
from .filecheck import check_image_file
from .outputs import check_regular_input

_FORMATS = {
    ".nrrd": "NRRD", ".nhdr": "NRRD", ".nii": "NIfTI", ".nii.gz": "NIfTI",
    ".mha": "MetaImage", ".mhd": "MetaImage",
}


def file_format(path) -> Optional[str]:
    """Format name from the file name (``NRRD``, ``NIfTI``, ``MetaImage``) or None."""
    name = str(path).lower()
    for suffix, fmt in sorted(_FORMATS.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return fmt
    return None


def read_image(path) -> sitk.Image:
    """Read any image file (a mask, a labelmap) with SimpleITK, checked like a CT file.

    Raises
    ------
    BadInputError
        Missing, not a regular file, unreadable, or holding less data than its header says.
    ResourceExhaustedError
        Too large for the available memory.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise BadInputError(f"Input file not found: {p}")
    check_regular_input(p)
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(p))
        with dicom._quiet_itk():
            reader.ReadImageInformation()
        check_image_file(p, reader, file_format(p))
        with dicom._quiet_itk():
            return call_interruptibly(reader.Execute)
    except RuntimeError as exc:
        raise _unreadable(p, exc, file_format(p), IMAGE_FILE_FORMATS) from None


#: what :func:`read_image` reads (masks, labelmaps: one file)
IMAGE_FILE_FORMATS = "NRRD (.nrrd), NIfTI (.nii, .nii.gz), MetaImage (.mha, .mhd)"
#: what :func:`read_volume` reads (a CT)
VOLUME_FORMATS = IMAGE_FILE_FORMATS + ", DICOM (file or series folder)"


def _unreadable(p: Path, exc: Exception, fmt: Optional[str], known: str = VOLUME_FORMATS) -> BadInputError:
    """The sentence for a file SimpleITK could not read: its last line, without ITK's prefix."""
    lines = str(exc).strip().splitlines()
    reason = next((line for line in reversed(lines) if line.strip()), "unknown error").strip()
    if fmt is not None and "Unable to determine ImageIO reader" in reason:
        # no reader recognised the contents: listing the format its name already has would only confuse
        return BadInputError(f"Cannot read {p}: its name says {fmt}, but its contents are not {fmt} "
                             "(another kind of file renamed, or a damaged one).")
    reason = reason.removeprefix("sitk::ERROR:").strip()
    return BadInputError(f"Cannot read {p}: {reason} (readable formats: {known}).")


def _read_file(p: Path) -> Volume:
    if dicom.is_dicom_file(p):
        return dicom.read_dicom_file(p)
    fmt = file_format(p)
    if fmt == "NRRD" and not sitk_available():
        from .nrrd_lite import read_nrrd

        vol = read_nrrd(p, list(dicom.META_TAGS) + list(PROVENANCE_KEYS))
        vol.meta["source_format"] = fmt
        return vol
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(p))
        with dicom._quiet_itk():
            reader.ReadImageInformation()
        check_image_file(p, reader, fmt)
        with dicom._quiet_itk():
            image = call_interruptibly(reader.Execute)
    except RuntimeError as exc:
        if fmt is None:
            # No known extension and not a DICOM preamble: maybe DICOM without preamble.
            try:
                return dicom.read_dicom_file(p)
            except BadInputError:
                pass
        raise _unreadable(p, exc, fmt) from None
    keys = set(image.GetMetaDataKeys())
    if {"0008|0060", "0028|0010"} & keys:  # DICOM without preamble or extension
        return dicom.read_dicom_file(p)
    meta = {}
    for name in list(dicom.META_TAGS) + list(PROVENANCE_KEYS):  # tags written by write_volume (NRRD/MHA)
        if name in keys and image.GetMetaData(name).strip():
            meta[name] = image.GetMetaData(name).strip()
    if str(meta.get("Modality", "")).startswith("MET_MOD_"):
        # MetaIO's own modality field (MET_MOD_CT, MET_MOD_UNKNOWN when none was set), not a DICOM tag.
        mod = meta.pop("Modality")[len("MET_MOD_"):]
        if mod != "UNKNOWN":
            meta["Modality"] = mod
    vol = image_to_volume(image, meta)
    vol.meta["source_format"] = fmt or reader.GetImageIO().replace("ImageIO", "")
    return vol


def read_volume(path, series_uid: Optional[str] = None, validate: bool = True,
                allow_missing_slices: bool = False) -> Volume:
    """Read a CT volume in HU.

    Parameters
    ----------
    path : str or path-like
        A NRRD, NIfTI (``.nii``/``.nii.gz``) or MetaImage (``.mha``/``.mhd``) file, a
        DICOM file, or a folder holding a DICOM series.
    series_uid : str, optional
        For a DICOM folder with several series: the SeriesInstanceUID to read. By default
        the series with most slices is read (with a ``SERIES_CHOSEN`` warning).
    validate : bool
        Run :func:`~CTNormalizeLib.io.validate.validate_ct` (3D, finite, CT, HU-like).
    allow_missing_slices : bool
        For a DICOM folder: interpolate over slices that cannot be read or are missing
        (a gap of about twice the spacing or more), with a ``MISSING_SLICES`` warning that
        names them, instead of refusing the series.

    Returns
    -------
    Volume
        float32 HU ``[z,y,x]`` (rescale slope/intercept applied), spacing in array order
        ``(z,y,x)``, origin and direction in ITK order. ``meta`` holds the DICOM tags of
        :data:`~CTNormalizeLib.io.dicom.META_TAGS` that are present (strings), plus
        ``source_path``, ``source_format`` and, where something was changed or chosen,
        ``warnings`` (list of ``{"code", "message"}``).

    Raises
    ------
    BadInputError
        Missing path, not a regular file or folder (a device, FIFO, socket), unreadable
        format, a file holding less data than its header describes, unusable DICOM series,
        unreadable or missing slices (the message says why and names them).
    ResourceExhaustedError
        The image described by the header would not fit in memory.
    NotCTError
        With ``validate``: not a CT, or values that are not HU.
    """
    p = check_regular_input(path)
    if p.is_dir():
        vol = dicom.read_dicom_series(p, series_uid, allow_missing_slices=allow_missing_slices)
    else:
        if series_uid:
            if not dicom.is_dicom_file(p):
                raise BadInputError(f"A SeriesInstanceUID was given, but {p} is not DICOM; "
                                    "series selection applies to DICOM folders.")
        vol = _read_file(p)
        if series_uid and vol.meta.get("SeriesInstanceUID") != series_uid.strip():
            raise BadInputError(
                f"{p} belongs to series {vol.meta.get('SeriesInstanceUID')!r}, not {series_uid!r}; "
                "pass the series folder to choose among series."
            )
        vol.meta["source_path"] = str(p.resolve())
    if p.is_dir():
        vol.meta["source_path"] = str(p.resolve())
    if validate:
        from .validate import validate_ct

        validate_ct(vol)
    return vol
