"""Reading CT volumes: NRRD, NIfTI, MHA/MHD, a DICOM file or a DICOM series folder."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ._sitk import available as sitk_available
from ._sitk import sitk

from ..errors import BadInputError
from ..volume import Volume
from . import dicom
from .sitk_volume import image_to_volume

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


def _read_file(p: Path) -> Volume:
    if dicom.is_dicom_file(p):
        return dicom.read_dicom_file(p)
    fmt = file_format(p)
    if fmt == "NRRD" and not sitk_available():
        from .nrrd_lite import read_nrrd

        vol = read_nrrd(p, list(dicom.META_TAGS) + ["ctnormalize"])
        vol.meta["source_format"] = fmt
        return vol
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(p))
        with dicom._quiet_itk():
            image = reader.Execute()
    except RuntimeError as exc:
        if fmt is None:
            # No known extension and not a DICOM preamble: maybe DICOM without preamble.
            try:
                return dicom.read_dicom_file(p)
            except BadInputError:
                pass
        reason = str(exc).strip().splitlines()
        reason = next((line for line in reversed(reason) if line.strip()), "unknown error")
        known = "NRRD (.nrrd), NIfTI (.nii, .nii.gz), MetaImage (.mha, .mhd), DICOM (file or series folder)"
        raise BadInputError(f"Cannot read {p}: {reason.strip()} (readable formats: {known}).") from None
    keys = set(image.GetMetaDataKeys())
    if {"0008|0060", "0028|0010"} & keys:  # DICOM without preamble or extension
        return dicom.read_dicom_file(p)
    meta = {}
    for name in list(dicom.META_TAGS) + ["ctnormalize"]:  # tags written by write_volume (NRRD/MHA)
        if name in keys and image.GetMetaData(name).strip():
            meta[name] = image.GetMetaData(name).strip()
    vol = image_to_volume(image, meta)
    vol.meta["source_format"] = fmt or reader.GetImageIO().replace("ImageIO", "")
    return vol


def read_volume(path, series_uid: Optional[str] = None, validate: bool = True) -> Volume:
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
        Missing path, unreadable format, unusable DICOM series (the message says why).
    NotCTError
        With ``validate``: not a CT, or values that are not HU.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise BadInputError(f"Input not found: {p}")
    if p.is_dir():
        vol = dicom.read_dicom_series(p, series_uid)
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
