"""Lung and emphysema masks as a DICOM Segmentation (SEG) object, through highdicom.

The SEG references the CT series it was computed on (its instances are the source images),
shares its study, patient and frame of reference, and names each segment with SNOMED CT
codes: right lung (3341006) and left lung (44029006) as anatomical structures, and
pulmonary emphysema (87433001) as a morphologically abnormal structure in the lung, the
low-attenuation area below the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..version import __version__
from ..errors import BadInputError
from ..volume import Volume
from .atomic import atomic_output

MODEL_NAME = "CTNormalize"


@dataclass(frozen=True)
class SegmentSpec:
    """One segment: its label, SNOMED CT category and type, and the algorithm family."""

    label: str
    category: tuple  # (value, scheme, meaning)
    type: tuple
    family: str  # attribute of pydicom's codes.cid7162
    color: tuple  # CIELab


ANATOMY = ("91723000", "SCT", "Anatomical Structure")
ABNORMAL = ("49755003", "SCT", "Morphologically Abnormal Structure")
LUNG = ("39607008", "SCT", "Lung")
SEGMENTS = {
    "right_lung": SegmentSpec("Right lung", ANATOMY, ("3341006", "SCT", "Right lung"),
                              "MorphologicalOperations", (60.0, 30.0, 20.0)),
    "left_lung": SegmentSpec("Left lung", ANATOMY, ("44029006", "SCT", "Left lung"),
                             "MorphologicalOperations", (60.0, -20.0, 40.0)),
    "emphysema": SegmentSpec("Emphysema (LAA)", ABNORMAL, ("87433001", "SCT", "Pulmonary emphysema"),
                             "HistogramAnalysis", (80.0, 0.0, 80.0)),
}


def _code(triple):
    from highdicom.sr import CodedConcept

    return CodedConcept(*triple)


def _source_datasets(volume: Volume) -> list:
    """The CT's instances, sorted along the slice normal, one per volume slice."""
    import pydicom

    from .dicom import source_instance_files

    if volume.meta.get("source_format") != "DICOM" or not volume.meta.get("source_path"):
        raise BadInputError("A DICOM SEG references the CT's DICOM instances: give a DICOM series folder as input, "
                            f"not a {volume.meta.get('source_format') or 'volume'} file.")
    files = source_instance_files(volume)
    datasets = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in files]
    normal = np.asarray(volume.direction, dtype=np.float64).reshape(3, 3)[:, 2]
    pos = np.array([float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)) for ds in datasets])
    order = np.argsort(pos, kind="stable")
    datasets, pos = [datasets[i] for i in order], pos[order]
    expected = float(np.dot(volume.origin, normal)) + volume.spacing[0] * np.arange(volume.shape[0])
    if len(datasets) != volume.shape[0] or np.max(np.abs(pos - expected)) > 0.01 * volume.spacing[0] + 1e-3:
        raise BadInputError(
            f"The CT volume ({volume.shape[0]} slices) is not on the grid of its {len(datasets)} DICOM instances "
            "(the series was resampled on reading, e.g. for uneven slice spacing); a DICOM SEG must follow the "
            "original slices.")
    return datasets


def write_lung_seg(path, volume: Volume, lung_labels: np.ndarray, emphysema: np.ndarray,
                   threshold: float) -> Path:
    """Write the lungs (1 = right, 2 = left) and the emphysema mask as a DICOM SEG, atomically.

    Parameters
    ----------
    path : str or path-like
        The ``.dcm`` file to write.
    volume : Volume
        The CT, read from a DICOM series (its instances become the SEG's source images).
    lung_labels : np.ndarray
        ``[z, y, x]`` labels on the CT's grid: 1 right lung, 2 left lung.
    emphysema : np.ndarray
        bool ``[z, y, x]``: lung voxels below ``threshold``.
    threshold : float
        The LAA threshold (HU), recorded in the segment label and the content description.

    Raises
    ------
    BadInputError
        The CT is not a DICOM series, or its volume is not on the instances' grid.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    labels = np.asarray(lung_labels)
    emph = np.asarray(emphysema, dtype=bool)
    if labels.shape != volume.shape or emph.shape != volume.shape:
        raise BadInputError(f"Masks {labels.shape}/{emph.shape} are not on the CT's grid {volume.shape}.")
    sources = _source_datasets(volume)
    masks = {"right_lung": labels == 1, "left_lung": labels == 2, "emphysema": emph}
    descriptions, planes = [], []
    for number, (key, mask) in enumerate(masks.items(), start=1):
        spec = SEGMENTS[key]
        label = spec.label if key != "emphysema" else f"{spec.label} < {threshold:g} HU"
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=label[:64],
            segmented_property_category=_code(spec.category), segmented_property_type=_code(spec.type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=f"{MODEL_NAME} lung and emphysema", family=getattr(codes.cid7162, spec.family),
                version=__version__),
            anatomic_regions=[_code(LUNG)] if key == "emphysema" else None,
            display_color=hd.color.CIELabColor(*spec.color)))
        planes.append(mask)
    pixels = np.stack(planes, axis=-1).astype(np.uint8)  # (frames, rows, columns, segments)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=int(
            sources[0].get("SeriesNumber") or 0) + 2000,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MODEL_NAME,
        manufacturer_model_name=MODEL_NAME, software_versions=__version__, device_serial_number="0",
        content_label="LUNGS", content_description=(
            f"Lungs and emphysema (LAA below {threshold:g} HU). Research use, not for diagnosis.")[:64],
        series_description="Lungs and emphysema [CTNormalize]")
    out = Path(path)
    with atomic_output(out) as tmp:
        seg.save_as(str(tmp))
    return out
