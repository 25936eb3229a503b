"""DICOM reading: single files and series folders, through SimpleITK (GDCM), pydicom as fallback.

Slices are sorted by their position along the slice normal (from ImagePositionPatient
and ImageOrientationPatient). Rescale slope/intercept are applied per slice: GDCM does
it when SimpleITK reads a file, and the pydicom fallback does it explicitly.

Non-uniform slice spacing in a series is **resampled** to the median spacing by linear
interpolation along z, with a ``NONUNIFORM_SPACING`` warning in ``meta["warnings"]``.
Missing slices -- files of the series that cannot be read (GDCM leaves them out of the
series), or a gap of :data:`MISSING_GAP` times the median spacing or more -- are refused
with a message naming them, unless ``allow_missing_slices``: then they are interpolated
over with a ``MISSING_SLICES`` warning that names them. Duplicate slice positions are an
error.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from ._sitk import sitk

from ..errors import BadInputError
from ..imaging.zgrid import resample_z
from ..volume import Volume
from .sitk_volume import image_to_volume
from .missing_slices import MISSING_GAP, missing_slices  # noqa: F401


#: DICOM keyword -> SimpleITK/GDCM metadata key, for the tags kept in ``Volume.meta``.
META_TAGS = {
    "Modality": "0008|0060",
    "Manufacturer": "0008|0070",
    "ManufacturerModelName": "0008|1090",
    "SeriesInstanceUID": "0020|000e",
    "SeriesDescription": "0008|103e",
    "ConvolutionKernel": "0018|1210",
    "SliceThickness": "0018|0050",
    "SpacingBetweenSlices": "0018|0088",
    "KVP": "0018|0060",
    "Exposure": "0018|1152",
    "XRayTubeCurrent": "0018|1151",
    "ExposureTime": "0018|1150",
    "CTDIvol": "0018|9345",
    "AcquisitionType": "0018|9302",
    "SpiralPitchFactor": "0018|9311",
}
#: The private block of a derived series written by CTNormalize: (group, creator, {meta key:
#: element offset in the block}). Read back into ``Volume.meta`` like an NRRD header's keys.
PROVENANCE_PRIVATE = (0x0071, "CTNormalize", {"ctnormalize": 0x10, "ctnormalize_texture": 0x11,
                                               "ctnormalize_target": 0x12, "ctnormalize_target_noise_hu": 0x13})
# Tags that vary per slice with tube-current modulation: the series value is their mean.
_PER_SLICE_MEAN = ("Exposure", "XRayTubeCurrent", "ExposureTime", "CTDIvol")

_IPP = "0020|0032"
_IOP = "0020|0037"


@dataclass
class SliceHeader:
    path: Path
    series_uid: str
    ipp: Optional[np.ndarray]  # ImagePositionPatient (x, y, z) LPS
    iop: Optional[np.ndarray]  # ImageOrientationPatient (6 cosines)
    tags: dict = field(default_factory=dict)


@dataclass
class SeriesInfo:
    """One DICOM series found in a folder."""

    uid: str
    files: list
    description: str = ""

    @property
    def n_slices(self) -> int:
        return len(self.files)


def is_dicom_file(path) -> bool:
    """True if ``path`` starts with the DICOM preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _floats(text: Optional[str]) -> Optional[np.ndarray]:
    if not text:
        return None
    try:
        return np.array([float(v) for v in str(text).strip().split("\\")], dtype=np.float64)
    except ValueError:
        return None


def _clean_tag(value) -> str:
    return str(value).strip().strip("\x00").strip()


@contextlib.contextmanager
def _quiet_itk():
    """ITK prints warnings (e.g. 'non uniform sampling') on stderr; we report our own."""
    old = sitk.ProcessObject_GetGlobalWarningDisplay()
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject_SetGlobalWarningDisplay(old)


# ----------------------------------------------------------------------------- headers

def _header_sitk(path: Path) -> SliceHeader:
    r = sitk.ImageFileReader()
    r.SetFileName(str(path))
    r.SetImageIO("GDCMImageIO")
    with _quiet_itk():
        r.ReadImageInformation()
    keys = set(r.GetMetaDataKeys())

    def get(key):
        return _clean_tag(r.GetMetaData(key)) if key in keys else None

    tags = {}
    for name, key in META_TAGS.items():
        v = get(key)
        if v:
            tags[name] = v
    return SliceHeader(path, tags.get("SeriesInstanceUID", ""), _floats(get(_IPP)), _floats(get(_IOP)), tags)


def _pydicom():
    try:
        import pydicom
    except ImportError:  # pragma: no cover - pydicom is in the dicom/test extras
        return None
    return pydicom


def _provenance_of(ds) -> dict:
    """The ``ctnormalize*`` keys of a derived series' private block (empty for other series)."""
    group, creator, elements = PROVENANCE_PRIVATE
    try:
        block = ds.private_block(group, creator)
    except KeyError:
        return {}
    out = {}
    for name, offset in elements.items():
        if offset not in block:
            continue
        value = block[offset].value
        if isinstance(value, (bytes, bytearray)):  # UN after an implicit-VR copy (PACS, storescp)
            value = bytes(value).decode("utf-8", "replace")
        text = _clean_tag(value) if value is not None else ""
        if text:
            out[name] = text
    return out


def _with_provenance(header: SliceHeader) -> dict:
    """``header.tags`` plus the private provenance block of a series we derived.

    GDCM does not pass private tags on, so a GDCM header of our own series is completed by
    one pydicom read (once per series, not per slice)."""
    tags = dict(header.tags)
    if tags.get("Manufacturer") != PROVENANCE_PRIVATE[1] or "ctnormalize" in tags:
        return tags
    pydicom = _pydicom()
    if pydicom is None:
        return tags
    try:
        ds = pydicom.dcmread(str(header.path), stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - the pixels' reader reports unreadable files
        return tags
    tags.update(_provenance_of(ds))
    return tags


def _header_pydicom(path: Path) -> Optional[SliceHeader]:
    pydicom = _pydicom()
    if pydicom is None:
        return None
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - any unreadable file is simply not a slice
        return None
    if "PixelData" not in ds and not hasattr(ds, "Rows"):
        return None
    tags = {}
    for name in META_TAGS:
        v = ds.get(name)
        if v is not None and str(v).strip():
            tags[name] = _clean_tag("\\".join(str(x) for x in v) if isinstance(v, (list, tuple)) or
                                    type(v).__name__ == "MultiValue" else v)
    tags.update(_provenance_of(ds))
    ipp = ds.get("ImagePositionPatient")
    iop = ds.get("ImageOrientationPatient")
    return SliceHeader(
        path,
        tags.get("SeriesInstanceUID", ""),
        None if ipp is None else np.array([float(v) for v in ipp]),
        None if iop is None else np.array([float(v) for v in iop]),
        tags,
    )


# ----------------------------------------------------------------------------- series listing

def list_series(directory) -> list[SeriesInfo]:
    """The DICOM series in ``directory`` (not its subfolders), most slices first.

    Uses GDCM (SimpleITK); if GDCM finds none, pydicom looks at every file (this also
    finds files without the DICOM preamble).
    """
    d = Path(directory)
    out = []
    with _quiet_itk():
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(d))
    for uid in uids:
        files = [Path(f) for f in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(d), uid)]
        out.append(SeriesInfo(uid, files))
    if not out and _pydicom() is not None:
        groups: dict[str, list] = {}
        for f in sorted(p for p in d.iterdir() if p.is_file()):
            h = _header_pydicom(f)
            if h is not None:
                groups.setdefault(h.series_uid, []).append(f)
        out = [SeriesInfo(uid, files) for uid, files in groups.items()]
    for s in out:
        with contextlib.suppress(Exception):
            s.description = _header_sitk(s.files[0]).tags.get("SeriesDescription", "")
    out.sort(key=lambda s: (-s.n_slices, s.uid))
    return out


def source_instance_files(volume) -> list[Path]:
    """The DICOM files ``volume`` was read from: its series in the input folder, or the one file.

    Empty when the volume was not read from DICOM (``meta["source_format"]``/``["source_path"]``).
    """
    src = volume.meta.get("source_path")
    if volume.meta.get("source_format") != "DICOM" or not src:
        return []
    p = Path(src)
    if not p.is_dir():
        return [p]
    uid = volume.meta.get("SeriesInstanceUID")
    series = [s for s in list_series(p) if not uid or s.uid == uid]
    return list(series[0].files) if series else []


def _series_summary(series: list[SeriesInfo]) -> str:
    return "; ".join(
        f"{s.uid} ({s.n_slices} slice{'s' if s.n_slices != 1 else ''}"
        f"{', ' + repr(s.description) if s.description else ''})"
        for s in series
    )


# ----------------------------------------------------------------------------- geometry

def _normal(iop: np.ndarray) -> np.ndarray:
    n = np.cross(iop[:3], iop[3:6])
    norm = np.linalg.norm(n)
    if norm < 1e-6:
        raise BadInputError("ImageOrientationPatient has parallel row and column directions.")
    return n / norm


def _direction(iop: np.ndarray) -> tuple:
    r, c = iop[:3], iop[3:6]
    n = _normal(iop)
    m = np.stack([r, c, n], axis=1)  # columns are the x, y, z axes (ITK convention)
    return tuple(float(v) for v in m.ravel())


def _merge_tags(headers: list[SliceHeader]) -> dict:
    meta = _with_provenance(headers[0])
    for name in _PER_SLICE_MEAN:
        vals = [_floats(h.tags.get(name)) for h in headers]
        vals = [v[0] for v in vals if v is not None and len(v)]
        if len(vals) > 1 and (max(vals) - min(vals)) > 1e-6 * max(1.0, abs(max(vals))):
            meta[name] = f"{float(np.mean(vals)):.6g}"
    return meta


def _resample_z(arr: np.ndarray, pos: np.ndarray, step: float) -> tuple[np.ndarray, int]:
    """Linear interpolation along z from slice positions ``pos`` onto a uniform grid of ``step``.

    (A SimpleITK image cannot hold a non-uniform grid, so its resampler cannot take this
    stack; the shared z resampler works from positions.)
    """
    n = int(np.floor((pos[-1] - pos[0]) / step + 1e-6)) + 1
    return resample_z(arr, pos, pos[0] + step * np.arange(n)), n


# ----------------------------------------------------------------------------- pixels

def _pixels_sitk(files: list[Path]) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in files])
    reader.SetImageIO("GDCMImageIO")
    reader.SetOutputPixelType(sitk.sitkFloat32)  # per-file rescale may give non-integer HU
    with _quiet_itk():
        return reader.Execute()


def _pixels_pydicom(files: list[Path], bad: Optional[list] = None) -> np.ndarray:
    """Pixels of ``files`` in HU; with a ``bad`` list, undecodable files are skipped and
    listed there instead of being an error."""
    pydicom = _pydicom()
    if pydicom is None:
        raise BadInputError("SimpleITK could not read these DICOM files and pydicom is not installed.")
    slices = []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), force=True)
            px = ds.pixel_array.astype(np.float32)
        except Exception as exc:  # noqa: BLE001
            if bad is not None:
                bad.append(f)
                continue
            raise BadInputError(f"Cannot decode the pixels of {f}: {exc}. "
                                "Use --allow-missing-slices to interpolate over unreadable slices.") from None
        slope = float(ds.get("RescaleSlope", 1) or 1)
        intercept = float(ds.get("RescaleIntercept", 0) or 0)
        px = px * slope + intercept
        if px.ndim == 2:
            px = px[None]
        slices.append(px)
    return np.concatenate(slices, axis=0)


def _pydicom_geometry(path: Path) -> tuple[tuple, tuple, tuple]:
    """(spacing x,y, origin, direction) of one file, read with pydicom."""
    ds = _pydicom().dcmread(str(path), stop_before_pixels=True, force=True)
    ps = ds.get("PixelSpacing", [1.0, 1.0])
    ipp = ds.get("ImagePositionPatient", [0.0, 0.0, 0.0])
    iop = np.array([float(v) for v in ds.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0])])
    return (float(ps[1]), float(ps[0])), tuple(float(v) for v in ipp), _direction(iop)


# ----------------------------------------------------------------------------- unreadable files

def unreadable_files(directory, series: list[SeriesInfo], uid: str) -> list[Path]:
    """DICOM files of ``directory`` that no listed series holds but that may belong to ``uid``.

    GDCM leaves a file it cannot read (e.g. truncated) out of every series. Such a file is
    one of the series' slices unless pydicom can read its header and shows it belongs to
    another series. Files without the DICOM preamble are not considered (they may be
    anything).
    """
    listed = {Path(f).resolve() for s in series for f in s.files}
    out = []
    for f in sorted(p for p in Path(directory).iterdir() if p.is_file()):
        if f.resolve() in listed or not is_dicom_file(f):
            continue
        other = None
        pydicom = _pydicom()
        if pydicom is not None:
            try:
                ds = pydicom.dcmread(str(f), stop_before_pixels=True, force=True)
                other = str(ds.get("SeriesInstanceUID", "") or "").strip()
                if str(getattr(ds.get("file_meta", None), "MediaStorageSOPClassUID", "")) == "1.2.840.10008.1.3.10":
                    other = "DICOMDIR"
            except Exception:  # noqa: BLE001 - an unreadable header is what we look for
                other = None
        if other and other != uid:
            continue
        out.append(f)
    return out


# ----------------------------------------------------------------------------- public readers

def read_dicom_file(path) -> Volume:
    """One DICOM file (a slice or a multi-frame image) as a :class:`Volume`.

    A single slice gives a volume with one slice (``validate_ct`` refuses it as 2D).
    """
    p = Path(path)
    header = None
    try:
        header = _header_sitk(p)
        with _quiet_itk():
            image = sitk.ReadImage(str(p), sitk.sitkFloat32, imageIO="GDCMImageIO")
        vol = image_to_volume(image)
    except RuntimeError as exc:
        header = _header_pydicom(p)
        if header is None:
            raise BadInputError(f"Cannot read {p} as DICOM: {str(exc).strip().splitlines()[-1]}") from None
        arr = _pixels_pydicom([p])
        (sx, sy), origin, direction = _pydicom_geometry(p)
        sz = float(header.tags.get("SpacingBetweenSlices") or header.tags.get("SliceThickness") or 1.0)
        vol = Volume(arr, (sz, sy, sx), origin, direction)
    vol.meta.update(_with_provenance(header))
    vol.meta["source_path"] = str(p)
    vol.meta["source_format"] = "DICOM"
    return vol


def read_dicom_series(directory, series_uid: Optional[str] = None, allow_missing_slices: bool = False) -> Volume:
    """The series in ``directory`` with most slices, or the one with ``series_uid``.

    ``allow_missing_slices`` interpolates over unreadable or missing slices (with a
    ``MISSING_SLICES`` warning naming them) instead of refusing the series.

    Raises
    ------
    BadInputError
        No DICOM series in the folder; an unknown ``series_uid`` (the message lists the
        series found, with their slice counts); slices without position/orientation in a
        multi-slice series; duplicate slice positions; unreadable or missing slices (named).
    """
    d = Path(directory)
    series = list_series(d)
    if not series:
        raise BadInputError(f"No DICOM series found in the folder {d} (subfolders are not searched).")
    warnings = []
    if series_uid:
        chosen = [s for s in series if s.uid == series_uid.strip()]
        if not chosen:
            raise BadInputError(
                f"No series with SeriesInstanceUID {series_uid!r} in {d}. Series found: {_series_summary(series)}."
            )
        chosen = chosen[0]
    else:
        chosen = series[0]
        if len(series) > 1:
            tied = sum(s.n_slices == chosen.n_slices for s in series)
            why = ("the one with most slices" if tied == 1 else
                   f"the first by SeriesInstanceUID of the {tied} series with the most slices ({chosen.n_slices})")
            warnings.append({
                "code": "SERIES_CHOSEN",
                "message": f"{d} holds {len(series)} series; read {chosen.uid} ({chosen.n_slices} slices), "
                           f"{why}. Others: {_series_summary(series[1:])}. "
                           "Choose another with --series-uid.",
            })

    use_sitk = True
    try:
        headers = [_header_sitk(f) for f in chosen.files]
    except RuntimeError:
        use_sitk = False
        headers = [_header_pydicom(f) for f in chosen.files]
        if any(h is None for h in headers):
            raise BadInputError(f"Cannot read the DICOM headers of series {chosen.uid} in {d}.") from None

    if len(headers) == 1:
        vol = read_dicom_file(headers[0].path)
        vol.meta.setdefault("warnings", []).extend(warnings)
        vol.meta["source_path"] = str(d)
        return vol

    if any(h.ipp is None or h.iop is None or len(h.iop) < 6 for h in headers):
        raise BadInputError(
            f"Series {chosen.uid} in {d} has slices without ImagePositionPatient/ImageOrientationPatient; "
            "cannot order the slices."
        )
    normal = _normal(headers[0].iop)
    pos = np.array([float(np.dot(h.ipp, normal)) for h in headers])
    order = np.argsort(pos, kind="stable")
    headers = [headers[i] for i in order]
    pos = pos[order]
    gaps = np.diff(pos)
    step = float(np.median(gaps))
    dup = int(np.sum(gaps < max(1e-3 * step, 1e-3)))
    if dup:
        raise BadInputError(
            f"Series {chosen.uid} in {d} has {dup} duplicate slice position(s) (several acquisitions or "
            "echoes in one series?); cannot build one volume."
        )
    files = [h.path for h in headers]
    unreadable = unreadable_files(d, series, chosen.uid)

    if use_sitk:
        try:
            image = _pixels_sitk(files)
            arr = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
            sx, sy = image.GetSpacing()[:2]
            direction = image.GetDirection()
        except RuntimeError:
            use_sitk = False
    if not use_sitk:
        bad: Optional[list] = [] if allow_missing_slices else None
        arr = _pixels_pydicom(files, bad)
        if bad:
            keep = [k for k, f in enumerate(files) if f not in bad]
            unreadable = unreadable + bad
            headers, files, pos = [headers[k] for k in keep], [files[k] for k in keep], pos[keep]
            if len(files) < 2:
                raise BadInputError(f"Series {chosen.uid} in {d}: fewer than two slices can be read.")
            gaps = np.diff(pos)
            step = float(np.median(gaps))
        (sx, sy), _, direction = _pydicom_geometry(files[0])
    if arr.shape[0] != len(files):
        raise BadInputError(f"Series {chosen.uid} in {d}: multi-frame files in a series are not supported.")
    origin = tuple(float(v) for v in headers[0].ipp)

    # Gantry tilt: slices shifted in-plane from one to the next (a sheared grid).
    shift = headers[-1].ipp - headers[0].ipp
    along = float(np.dot(shift, normal))
    across = float(np.linalg.norm(shift - along * normal))
    if along > 0 and across / along > 1e-3:
        warnings.append({
            "code": "GANTRY_TILT",
            "message": f"Slices are sheared (gantry tilt about {np.degrees(np.arctan2(across, along)):.1f} deg); "
                       "they are kept as an orthogonal grid, so geometry is approximate.",
        })

    missing = missing_slices(d, chosen.uid, pos, files, unreadable, allow_missing_slices)
    warnings += missing
    tol = max(0.01 * step, 0.01)
    if np.max(np.abs(gaps - step)) > tol:
        arr, n = _resample_z(arr, pos, step)
        # Gaps of whole slices are the missing slices MISSING_SLICES already names, not a varying spacing.
        whole_slices = np.all(np.abs(gaps - step * np.round(gaps / step)) <= tol)
        if not (missing and whole_slices):
            warnings.append({"code": "NONUNIFORM_SPACING", "message": (
                f"Slice spacing varies from {gaps.min():.3g} to {gaps.max():.3g} mm; resampled "
                f"{len(files)} slices to {n} slices at the median spacing {step:.4g} mm (linear along z).")})
    else:
        step = float((pos[-1] - pos[0]) / (len(pos) - 1))

    vol = Volume(arr, (step, float(sy), float(sx)), origin, direction)
    vol.meta.update(_merge_tags(headers))
    vol.meta["source_path"] = str(d)
    vol.meta["source_format"] = "DICOM"
    vol.meta["n_files"] = len(files)
    if len(series) > 1:
        vol.meta["dicom_series"] = [
            {"uid": s.uid, "slices": s.n_slices, "description": s.description} for s in series
        ]
    if warnings:
        vol.meta["warnings"] = warnings
    return vol
