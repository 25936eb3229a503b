"""The DICOM tags of a volume node, wherever Slicer keeps them, and the "is this a CT?" check.

Sources, later ones winning:

1. node attributes ``DICOM.<TagName>`` (e.g. ``DICOM.ConvolutionKernel``): the convention for
   volumes loaded from files whose acquisition is known (the module's sample data sets them);
2. the subject-hierarchy series item's attributes that Slicer's DICOM import sets
   (``DICOM.Modality``, ``DICOM.Manufacturer``, ``DICOM.Model``, ``DICOM.SeriesDescription``);
3. the DICOM database, through the node's ``DICOM.instanceUIDs`` attribute (all of
   :data:`DICOM_TAGS`; the first instance stands for the series).

The tags travel to the engine as NRRD header keys named like ``CTNormalizeLib.io.dicom.META_TAGS``
(``ConvolutionKernel:=B70f``), which the engine's reader turns into ``Volume.meta``.
"""

from __future__ import annotations

from .i18n import _

#: DICOM tags the engine's protocol detection reads (name -> "gggg,eeee" for ctkDICOMDatabase.fileValue).
DICOM_TAGS = {
    "Modality": "0008,0060",
    "Manufacturer": "0008,0070",
    "ManufacturerModelName": "0008,1090",
    "SeriesInstanceUID": "0020,000e",
    "SeriesDescription": "0008,103e",
    "ConvolutionKernel": "0018,1210",
    "SliceThickness": "0018,0050",
    "SpacingBetweenSlices": "0018,0088",
    "KVP": "0018,0060",
    "Exposure": "0018,1152",
    "XRayTubeCurrent": "0018,1151",
    "ExposureTime": "0018,1150",
    "CTDIvol": "0018,9345",
    "AcquisitionType": "0018,9302",
    "SpiralPitchFactor": "0018,9311",
}
#: Subject-hierarchy series attributes set by Slicer's DICOM import (DICOMLib/DICOMPlugin.py).
SH_ATTRIBUTES = {
    "Modality": "DICOM.Modality",
    "Manufacturer": "DICOM.Manufacturer",
    "ManufacturerModelName": "DICOM.Model",
    "SeriesDescription": "DICOM.SeriesDescription",
}
NODE_ATTRIBUTE_PREFIX = "DICOM."


class NotCTVolumeError(ValueError):
    """The volume is not a CT in Hounsfield units (refused before anything is launched)."""


def node_attribute_tags(node) -> dict:
    out = {}
    for name in DICOM_TAGS:
        value = node.GetAttribute(NODE_ATTRIBUTE_PREFIX + name)
        if value and value.strip():
            out[name] = value.strip()
    return out


def subject_hierarchy_tags(node) -> dict:
    """Series attributes of the node's subject-hierarchy item (empty when not from DICOM)."""
    import slicer

    scene = node.GetScene()
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene) if scene is not None else None
    item = sh.GetItemByDataNode(node) if sh is not None else 0
    if not item:
        return {}
    out = {}
    for name, attribute in SH_ATTRIBUTES.items():
        value = sh.GetItemAttribute(item, attribute)
        if value and value.strip():
            out[name] = value.strip()
    return out


def dicom_database_tags(node) -> dict:
    """Tags of the node's first DICOM instance, from the application's DICOM database."""
    import slicer

    uids = (node.GetAttribute("DICOM.instanceUIDs") or "").split()
    db = getattr(slicer, "dicomDatabase", None)
    if not uids or db is None:
        return {}
    path = db.fileForInstance(uids[0])
    if not path:
        return {}
    out = {}
    for name, tag in DICOM_TAGS.items():
        value = db.fileValue(path, tag)
        if value and str(value).strip():
            out[name] = str(value).strip()
    return out


def volume_tags(node) -> dict:
    """Every DICOM tag the module can find for ``node`` (see the module docstring)."""
    tags = node_attribute_tags(node)
    tags.update(subject_hierarchy_tags(node))
    tags.update(dicom_database_tags(node))
    return tags


def check_ct(node, tags: dict, role: str = "input") -> None:
    """Refuse, in plain words, a volume that is not a CT in Hounsfield units.

    ``role``: ``input`` (the volume to normalize) or ``reference`` (the scan to look like).

    Uses the engine's own check (``CTNormalizeLib.io.validate.validate_ct``: Modality tag,
    air near -1000 HU, a plausible range) on a subsample of the voxels.
    """
    import numpy as np
    import slicer

    from CTNormalizeLib.errors import BadInputError, NotCTError
    from CTNormalizeLib.io.validate import validate_ct
    from CTNormalizeLib.volume import Volume

    if node is None or node.GetImageData() is None:
        raise NotCTVolumeError(_("Select an input volume with image data.") if role == "input" else
                               _("Select a reference scan with image data."))
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise NotCTVolumeError(_("'{name}' is a labelmap (a segmentation), not a CT scan.").format(name=node.GetName()))
    arr = slicer.util.arrayFromVolume(node)
    step = max(1, int(arr.shape[0] // 64))  # ~64 slices are plenty to see air and the HU range
    sample = np.asarray(arr[::step], dtype=np.float32)
    if sample.shape[0] < 2:
        sample = np.asarray(arr, dtype=np.float32)
    vol = Volume(hu=sample, spacing=(1.0, 1.0, 1.0), meta={k: v for k, v in tags.items() if k == "Modality"})
    try:
        validate_ct(vol)
    except (NotCTError, BadInputError) as exc:
        what = (_("'{name}' cannot be normalized: {reason}") if role == "input" else
                _("'{name}' cannot be the reference scan: {reason}"))
        raise NotCTVolumeError(what.format(name=node.GetName(), reason=exc)) from None
