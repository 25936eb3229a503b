"""Writing a normalized volume as a derived DICOM CT series (one file per slice).

The series keeps the input's patient, study and frame of reference, gets new Series and
SOP Instance UIDs, ``ImageType DERIVED\\SECONDARY\\AXIAL`` and says how it was made:
``DerivationDescription`` (method or model with its sha256, source and target protocols,
engine version), ``DerivationCodeSequence``, ``SourceImageSequence`` (the input instances
each slice was computed from; ``ImageComments`` says so on a slice interpolated where the input
misses slices), and the output's ``ConvolutionKernel``, ``SliceThickness``, dose and
``AcquisitionType`` tags by the rules of :class:`~CTNormalizeLib.contracts.derivation.Derivation`
(the target's kernel; the thicker of the two slice thicknesses, since interpolated slices stay
as thick as the source's; the source's where the method leaves the kernel, the noise or the
slices as they were; ``SliceThickness`` empty (type 2) where that would be a thickness read from an
untagged input's pixels; ``AcquisitionType SEQUENCED`` for a rectangular target profile, which is how
a reader tells it from a helical one). A private block (creator ``CTNormalize``, see
:data:`~CTNormalizeLib.io.dicom.PROVENANCE_PRIVATE`) holds the provenance keys that NRRD
outputs carry in their header (:data:`~CTNormalizeLib.volume.PROVENANCE_KEYS`), so reading a
derived series back gives the same provenance as reading a volume file.
Pixels are int16 with ``RescaleSlope``/``RescaleIntercept``.

pydicom writes the files; highdicom supplies UIDs and coded concepts. Neither has a
writer for a classic single-frame CT Image (highdicom builds multi-frame and SEG/SR
objects), so the CT Image attributes are set here by hand.

A volume that came from NRRD/NIfTI has no patient or study: it gets a new study and frame
of reference, empty patient tags and a note in ``ImageComments`` that says so. The whole
series is written into a temp folder that is renamed to the output at the end.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..contracts.derivation import DOSE_TAGS, Derivation, derivation_from_report  # noqa: F401 - the writer's input
from ..contracts.report import RESEARCH_NOTE
from ..errors import BadInputError
from ..volume import Volume
from .atomic import atomic_output_dir
from .missing_slices import MISSING_GAP

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MODEL_NAME = "CTNormalize"
NO_PATIENT_NOTE = ("Made from a {fmt} file without patient data: patient and study attributes are absent; "
                   "this is a new study.")

# Copied from the input when present: patient, study, frame of reference, and the
# acquisition facts that normalization does not change.
COPIED_TAGS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "PatientSize", "PatientWeight", "PatientIdentityRemoved", "DeidentificationMethod",
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
    "StudyDescription", "FrameOfReferenceUID", "PositionReferenceIndicator", "PatientPosition",
    "BodyPartExamined", "KVP", "AcquisitionNumber", "AcquisitionDate", "AcquisitionTime",
)
_KERNEL_ORDER = ("smooth", "standard", "sharp", "very-sharp")


@dataclass
class WrittenSeries:
    """A derived series on disk."""

    path: Path
    series_instance_uid: str
    n_files: int
    warnings: list = field(default_factory=list)
    rescale_slope: float = 1.0  # 1: whole HU stored as they are (encode_hu)


def output_is_dicom(path, output_format: Optional[str] = None) -> bool:
    """True when ``-o path`` asks for a DICOM series.

    ``output_format`` ``"dicom"`` or ``"volume"`` decides; otherwise an existing folder or
    a path ending in ``/`` means DICOM.
    """
    if output_format in ("dicom", "volume"):
        return output_format == "dicom"
    text = str(path)
    return text.endswith(("/", "\\")) or os.path.isdir(text)  # isdir: False for an unusable path too


# ----------------------------------------------------------------------------- source series

@dataclass
class _Source:
    datasets: list  # pydicom headers, sorted along the slice normal
    positions: np.ndarray  # their positions along the normal (mm)
    fmt: str


def _read_source(volume: Volume) -> _Source:
    """Headers of the input's DICOM instances (none for NRRD/NIfTI input)."""
    import pydicom

    from .dicom import source_instance_files

    fmt = str(volume.meta.get("source_format") or "volume")
    if fmt != "DICOM" or not volume.meta.get("source_path"):
        return _Source([], np.zeros(0), fmt)
    files = source_instance_files(volume)
    datasets = [pydicom.dcmread(str(f), stop_before_pixels=True, force=True) for f in files]
    normal = _normal(volume.direction)
    pos = np.array([float(np.dot([float(v) for v in ds.get("ImagePositionPatient", [0, 0, 0])], normal))
                    for ds in datasets])
    order = np.argsort(pos, kind="stable")
    return _Source([datasets[i] for i in order], pos[order], fmt)


def _normal(direction) -> np.ndarray:
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    return d[:, 2]


GAP_NOTE = ("This slice lies where the input series misses slices: it is interpolated along z between the input "
            "slices it references.")


def _missing_gap_mm(src: _Source) -> float:
    """The distance between two input slices at which slices are missing between them: the reader's
    :data:`~CTNormalizeLib.io.missing_slices.MISSING_GAP` median spacings (infinite below 3 slices)."""
    if src.positions.size <= 2:
        return float("inf")
    return MISSING_GAP * float(np.median(np.diff(src.positions)))


def _references(src: _Source, position: float, half_width: float, gap_mm: float,
                per_side: int = 1) -> tuple[list, bool]:
    """The input instances an output slice was computed from, and whether it lies in a gap of the input.

    Those within the output slice's extent, and the ``per_side`` nearest input slices on each side of
    it (linear interpolation along z reads one on each side; the thickness step's cubic spline two); a
    position between two input slices ``gap_mm`` or more apart (:func:`_missing_gap_mm`) lies where
    slices are missing.
    """
    if not src.datasets:
        return [], False
    pos = src.positions
    near = set(np.nonzero(np.abs(pos - position) <= half_width + 1e-3)[0].tolist())
    below, above = np.nonzero(pos <= position + 1e-3)[0], np.nonzero(pos >= position - 1e-3)[0]
    near.update(int(i) for i in below[-per_side:])
    near.update(int(i) for i in above[:per_side])
    in_gap = bool(below.size and above.size and pos[above[0]] - pos[below[-1]] >= gap_mm)
    return [src.datasets[i] for i in sorted(near)], in_gap


# ----------------------------------------------------------------------------- pixels

def encode_hu(hu: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(stored int16, slope, intercept)`` with ``hu ~= stored * slope + intercept``.

    Slope 1 and intercept 0 (rounding to the nearest HU) when the values fit int16,
    else a slope that spans the range.
    """
    lo, hi = float(np.min(hu)), float(np.max(hu))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise BadInputError("The volume holds NaN or infinite values; cannot write DICOM.")
    if lo >= -32768 and hi <= 32767:
        slope, intercept = 1.0, 0.0
    else:
        slope = float(np.ceil((hi - lo) / 65535.0 * 1000.0) / 1000.0)
        intercept = lo + 32768.0 * slope
    stored = np.clip(np.round((hu - intercept) / slope), -32768, 32767).astype(np.int16)
    return stored, slope, intercept


# ----------------------------------------------------------------------------- datasets

def _derivation_codes(d: Derivation, z_changed: bool) -> list:
    """DICOM CID 7203 codes for what was done (smoothing, edge enhancement, resampling); may be empty."""
    from pydicom.sr.codedict import codes

    out = []
    sk, tk = d.source_kernel, d.target_kernel
    if d.changed("kernel") and sk in _KERNEL_ORDER and tk in _KERNEL_ORDER and sk != tk:
        out.append(codes.DCM.Smoothing if _KERNEL_ORDER.index(tk) < _KERNEL_ORDER.index(sk)
                   else codes.DCM.EdgeEnhancement)
    # Noise removed: a source noisier than the target, or the "clean" texture (a denoised mean estimate).
    less_noise = d.changed("noise") and (
        (d.noise_equivalent_dose is not None and d.noise_equivalent_dose < 1.0) or d.texture == "clean"
        or (d.source_dose and d.target_dose and d.target_dose > d.source_dose))
    if less_noise and codes.DCM.Smoothing not in out:
        out.append(codes.DCM.Smoothing)
    if z_changed:
        out.append(codes.DCM.SpatialResampling)
    return out


def _coded(code):
    from highdicom.sr import CodedConcept

    return CodedConcept(code.value, code.scheme_designator, code.meaning)


#: SeriesDescription is LO: at most 64 characters.
_LO_MAX = 64
_SHORTEST_ORIGINAL = 16


def _series_description(source_ds, volume: Volume, derivation: Derivation) -> str:
    """The source's description with ``[CTNormalize → target spec]``, at most 64 characters.

    An earlier CTNormalize suffix (a series normalized again) is replaced, not stacked; the source's
    description is shortened (with an ellipsis, to no less than 16 characters) rather than the spec cut in
    the middle; ``[CTN → spec]`` where the long form does not fit, then ``[CTN → spec]`` with what is left of
    the source's description (or none of it): two normalizations to different targets must not read the
    same in a PACS list. Only a spec too long for 64 characters on its own is left to DerivationDescription
    and the private block (``[CTNormalize]``).
    """
    original = ""
    if source_ds is not None:
        original = str(source_ds.get("SeriesDescription", "") or "").strip()
    original = re.split(r"\[CTN(?:ormalize)?(?=[\s\]]|$)", original)[0].strip()
    if not original:
        original = Path(str(volume.meta.get("source_path", "") or "")).name or "CT"
    spec = derivation.achieved_spec or derivation.target_spec or "target"
    room_needed = min(len(original), _SHORTEST_ORIGINAL)
    for suffix in (f" [CTNormalize → {spec}]", f" [CTN → {spec}]"):
        if len(suffix) + room_needed <= _LO_MAX:
            break
    else:
        suffix = f" [CTN → {spec}]"
        if len(suffix) - 1 > _LO_MAX:
            suffix, room_needed = " [CTNormalize]", min(len(original), _SHORTEST_ORIGINAL)
        elif len(suffix) + 2 > _LO_MAX:  # no room for even one character and an ellipsis
            return suffix.strip()
    room = _LO_MAX - len(suffix)
    if len(original) > room:
        original = original[:room - 1].rstrip() + "…"
    return original + suffix


def _text(value) -> str:
    """A tag's value as DICOM writes it: a multi-valued one (``Br64d\\3``) joined by backslashes."""
    if value is None:
        return ""
    if not isinstance(value, (str, bytes)) and hasattr(value, "__iter__"):
        return "\\".join(str(v).strip() for v in value)
    return str(value).strip()


def _base_dataset(source_ds, volume: Volume, output: Volume, derivation: Derivation,
                  series_uid: str, study_uid: str, frame_uid: str, now: _dt.datetime, comments: str):
    """The attributes every slice of the series shares."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: the description holds an arrow
    if source_ds is not None:
        for name in COPIED_TAGS:
            if name in source_ds:
                ds[name] = source_ds[name]
    for name in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                 "StudyID", "AccessionNumber", "ReferringPhysicianName", "KVP", "AcquisitionNumber",
                 "PositionReferenceIndicator", "PatientPosition"):
        if name not in ds:
            setattr(ds, name, "")  # type 2: present, empty when unknown
    if source_ds is None:
        ds.StudyDate, ds.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
        ds.StudyDescription = "CTNormalize (no patient data)"
        ds.PatientPosition = "HFS"  # required for CT (type 2C); the usual chest position
    ds.StudyInstanceUID, ds.FrameOfReferenceUID = study_uid, frame_uid
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series_uid
    src_number = source_ds.get("SeriesNumber") if source_ds is not None else None
    ds.SeriesNumber = int(src_number or 0) + 1000
    ds.SeriesDate = ds.ContentDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.SeriesDescription = _series_description(source_ds, volume, derivation)
    ds.Manufacturer = MODEL_NAME
    ds.ManufacturerModelName = MODEL_NAME
    ds.SoftwareVersions = derivation.engine_version
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    src_label = ""
    if source_ds is not None:
        src_label = " ".join(_text(source_ds.get(k, "")) for k in
                             ("Manufacturer", "ManufacturerModelName", "ConvolutionKernel")).strip()
        src_label = f"series {source_ds.get('SeriesInstanceUID', '')}" + (f" ({src_label})" if src_label else "")
    ds.DerivationDescription = derivation.description(src_label)
    z_changed = abs(output.spacing[0] - volume.spacing[0]) > 1e-3 * max(volume.spacing[0], 1e-6) \
        or output.shape[0] != volume.shape[0]
    codes = _derivation_codes(derivation, z_changed)
    if codes:
        ds.DerivationCodeSequence = [_coded(c) for c in codes]
    tags = derivation.output_meta(volume.meta, output.spacing[0])  # the rule a volume file's tags follow
    if not derivation.changed("kernel") and source_ds is not None and "ConvolutionKernel" in source_ds:
        ds["ConvolutionKernel"] = source_ds["ConvolutionKernel"]  # the method left the kernel: the tag as read
    elif tags.get("ConvolutionKernel"):
        ds.ConvolutionKernel = str(tags["ConvolutionKernel"])[:16]  # SH: 16 characters
    ds.SliceThickness = tags.get("SliceThickness", "")  # type 2: empty where only an estimate is known
    ds.SpacingBetweenSlices = f"{float(output.spacing[0]):.6g}"
    for tag in (*DOSE_TAGS, "AcquisitionType"):
        if tags.get(tag):
            _set_text_tag(ds, tag, tags[tag])
    _add_provenance(ds, derivation)
    ds.ImageComments = comments[:10240]
    d = np.asarray(output.direction, dtype=np.float64).reshape(3, 3)
    ds.ImageOrientationPatient = [f"{v:.8g}" for v in (*d[:, 0], *d[:, 1])]
    ds.PixelSpacing = [f"{output.spacing[1]:.8g}", f"{output.spacing[2]:.8g}"]
    ds.Rows, ds.Columns = int(output.shape[1]), int(output.shape[2])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = ["-600", "40"], ["1500", "400"]
    ds.WindowCenterWidthExplanation = ["LUNG", "MEDIASTINUM"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    return ds


def _set_text_tag(ds, keyword: str, text) -> None:
    """Set ``keyword`` from a tag value read as text (``Volume.meta``), in its VR; skip one that does not parse."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    vr = dictionary_VR(tag_for_keyword(keyword))
    try:
        value = float(text) if vr in ("FD", "FL") else str(int(round(float(text)))) if vr == "IS" else str(text)
    except (TypeError, ValueError):
        return
    setattr(ds, keyword, value)


def _add_provenance(ds, derivation: Derivation) -> None:
    from .dicom import PROVENANCE_PRIVATE

    group, creator, elements = PROVENANCE_PRIVATE
    block = ds.private_block(group, creator, create=True)
    block.add_new(elements["ctnormalize"], "LT", derivation.label[:10240])
    if derivation.texture:
        block.add_new(elements["ctnormalize_texture"], "LO", str(derivation.texture)[:64])
    for key, value in derivation.target_provenance().items():
        if value:
            block.add_new(elements[key], "LT", str(value)[:10240])


def _slice_dataset(base, k: int, output: Volume, stored: np.ndarray, slope: float, intercept: float,
                   refs: list):
    """One slice's dataset: the shared attributes plus position, pixels and references."""
    import copy

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian
    from highdicom import UID

    ds = copy.deepcopy(base)
    ds.SOPInstanceUID = UID()
    ds.InstanceNumber = k + 1
    d = np.asarray(output.direction, dtype=np.float64).reshape(3, 3)
    ipp = np.asarray(output.origin, dtype=np.float64) + k * output.spacing[0] * d[:, 2]
    ds.ImagePositionPatient = [f"{v:.8g}" for v in ipp]
    ds.SliceLocation = f"{float(np.dot(ipp, d[:, 2])):.8g}"
    ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.8g}", f"{intercept:.8g}"
    if refs:
        from pydicom.sr.codedict import codes

        purpose = codes.DCM.SourceImageForImageProcessingOperation
        items = []
        for r in refs:
            item = Dataset()
            item.ReferencedSOPClassUID = r.SOPClassUID
            item.ReferencedSOPInstanceUID = r.SOPInstanceUID
            item.PurposeOfReferenceCodeSequence = [_coded(purpose)]
            items.append(item)
        ds.SourceImageSequence = items
    px = np.ascontiguousarray(stored[k])
    ds.SmallestImagePixelValue, ds.LargestImagePixelValue = int(px.min()), int(px.max())
    ds["SmallestImagePixelValue"].VR = ds["LargestImagePixelValue"].VR = "SS"
    ds.PixelData = px.tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def check_output_dir(out_dir, input_path=None) -> None:
    """Refuse a DICOM output folder that is, or holds, the input, is a file, is named like a volume
    file (``out.nrrd``: the series would be a folder of that name), or is a non-empty folder that
    does not hold an earlier CTNormalize series (:class:`BadInputError`)."""
    from .read import file_format

    out = Path(out_dir)
    if file_format(out.name) and not out.is_dir():
        raise BadInputError(f"-o {out} names a {file_format(out.name)} file, but the output is a DICOM series, which "
                            "is a folder: give a folder name, or leave out --output-format dicom for a volume file.")
    src = input_path
    if src:
        s = Path(src).expanduser().resolve()
        o = out.expanduser().resolve()
        if o == s or o in s.parents:
            raise BadInputError(f"Refusing to write the DICOM series into {out}: it holds the input {s}, "
                                "and CTNormalize never overwrites an input. Choose another folder.")
    if out.exists() and not out.is_dir():
        raise BadInputError(f"Output {out} is a file; a DICOM series needs a folder.")
    if out.is_dir() and any(out.iterdir()) and not _is_our_series(out):
        raise BadInputError(f"Output folder {out} is not empty; give a new or empty folder for the DICOM series "
                            "(a folder holding an earlier CTNormalize series is replaced).")


def _is_our_series(folder: Path) -> bool:
    """True when every file in ``folder`` is a DICOM slice written by this module."""
    import pydicom

    for f in folder.iterdir():
        if not f.is_file():
            return False
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True, specific_tags=["ManufacturerModelName"])
        except Exception:  # noqa: BLE001 - anything unreadable is not ours
            return False
        if str(ds.get("ManufacturerModelName", "")) != MODEL_NAME:
            return False
    return True


def write_derived_series(output: Volume, out_dir, source: Volume, derivation: Derivation,
                         progress: Optional[Callable[[str, float], None]] = None) -> WrittenSeries:
    """Write ``output`` as a derived CT series of ``source`` into the folder ``out_dir``.

    Parameters
    ----------
    output : Volume
        The normalized volume (its geometry is written as is).
    out_dir : str or path-like
        A new or empty folder, or one holding an earlier CTNormalize series (replaced).
        The series is written into a temp folder next to it and renamed at the end.
    source : Volume
        The input as read (``meta`` gives ``source_path``, ``source_format`` and the
        ``SeriesInstanceUID`` of a DICOM input).
    derivation : Derivation
        From :func:`derivation_from_report`.
    progress : callable(stage, fraction), optional

    Returns
    -------
    WrittenSeries
        With a ``NO_PATIENT_DATA`` warning when the input was not DICOM.

    Raises
    ------
    BadInputError
        Output folder is the input's (or holds it), a file, or a non-empty foreign folder;
        non-finite voxels.
    """
    from highdicom import UID

    out = Path(out_dir)
    check_output_dir(out, source.meta.get("source_path"))
    if output.hu.ndim != 3:
        raise BadInputError(f"Can only write 3D volumes as a DICOM series, got shape {output.hu.shape}.")
    src = _read_source(source)
    first = src.datasets[0] if src.datasets else None
    warnings = []
    comments = RESEARCH_NOTE
    if first is None:
        note = NO_PATIENT_NOTE.format(fmt=src.fmt)
        comments = f"{RESEARCH_NOTE} {note}"
        warnings.append({"code": "NO_PATIENT_DATA", "message": note})
    now = _dt.datetime.now()
    series_uid = str(UID())
    study_uid = str(first.StudyInstanceUID) if first is not None and "StudyInstanceUID" in first else str(UID())
    frame_uid = str(first.FrameOfReferenceUID) if first is not None and "FrameOfReferenceUID" in first \
        else str(UID())
    base = _base_dataset(first, source, output, derivation, series_uid, study_uid, frame_uid, now, comments)
    stored, slope, intercept = encode_hu(output.hu)
    normal = _normal(output.direction)
    origin_pos = float(np.dot(output.origin, normal))
    half = 0.5 * max(float(derivation.target_thickness or 0.0), output.spacing[0])
    n = output.shape[0]
    gap_mm = _missing_gap_mm(src)
    # onto a finer z grid, the thickness step's cubic spline reads two input slices on each side
    finer = src.positions.size > 1 and output.spacing[0] < float(np.median(np.diff(src.positions))) - 1e-3
    per_side = 2 if finer else 1
    with atomic_output_dir(out) as tmp:
        for k in range(n):
            refs, in_gap = _references(src, origin_pos + k * output.spacing[0], half, gap_mm, per_side)
            ds = _slice_dataset(base, k, output, stored, slope, intercept, refs)
            if in_gap:
                ds.ImageComments = f"{GAP_NOTE} {ds.ImageComments}"[:10240]
            ds.save_as(str(tmp / f"IM{k + 1:05d}.dcm"), enforce_file_format=True)
            if progress is not None:
                progress("write dicom", (k + 1) / n)
    return WrittenSeries(out, series_uid, n, warnings, slope)
