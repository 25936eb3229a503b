"""Segments -> labelmap files for the engine, engine masks -> segments, standard terminology.

Every temporary labelmap (with the display and color-table nodes Slicer adds for it) is
removed again (:class:`.nodes.scratch_nodes`), so a run leaves no orphan nodes.
"""

from __future__ import annotations

from typing import Optional, Sequence

from .i18n import _
from .nodes import scratch_nodes

#: Terminology entries (vtkSegment.SetTerminology format: context~category~type~modifier~
#: anatomic context~anatomic region~region modifier), SNOMED CT codes as in Slicer's
#: "3D Slicer General Anatomy list" (Lung 39607008, Right 24028007, Left 7771000) and
#: Pulmonary emphysema 87433001 as a morphologically altered structure (49755003) in the lung.
_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
_ANATOMY = "Anatomic codes - DICOM master list"
TERMINOLOGY = {
    "lung": f"{_CONTEXT}~SCT^123037004^Anatomical Structure~SCT^39607008^Lung~^^~{_ANATOMY}~^^~^^",
    "right lung": f"{_CONTEXT}~SCT^123037004^Anatomical Structure~SCT^39607008^Lung~SCT^24028007^Right~{_ANATOMY}~^^~^^",
    "left lung": f"{_CONTEXT}~SCT^123037004^Anatomical Structure~SCT^39607008^Lung~SCT^7771000^Left~{_ANATOMY}~^^~^^",
    "emphysema": (f"{_CONTEXT}~SCT^49755003^Morphologically Altered Structure~SCT^87433001^Pulmonary emphysema~^^"
                  f"~{_ANATOMY}~SCT^39607008^Lung~^^"),
}


def all_segment_ids(segmentation_node) -> list[str]:
    seg = segmentation_node.GetSegmentation()
    return [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]


def segment_ids_by_name(segmentation_node, names: Optional[Sequence[str]] = None) -> list[str]:
    """IDs of the segments with these names (all segments when ``names`` is empty)."""
    seg = segmentation_node.GetSegmentation()
    ids = all_segment_ids(segmentation_node)
    if not names:
        return ids
    by_name = {seg.GetSegment(i).GetName(): i for i in ids}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(_("Segments not found in {name}: {missing}.").format(
            name=repr(segmentation_node.GetName()), missing=", ".join(missing)))
    return [by_name[n] for n in names]


def check_segment_ids(segmentation_node, segment_ids: Optional[Sequence[str]]) -> list[str]:
    """The given segment IDs (all when empty), each checked to exist; IDs are never read as names."""
    ids = all_segment_ids(segmentation_node)
    if not segment_ids:
        return ids
    missing = [s for s in segment_ids if s not in ids]
    if missing:
        raise ValueError(_("{name} has no segment with ID {missing}.").format(
            name=repr(segmentation_node.GetName()), missing=", ".join(missing)))
    return list(segment_ids)


def export_labelmap(segmentation_node, segment_ids: Sequence[str], reference_volume, path: str) -> dict:
    """Write the segments as one labelmap on the reference volume's grid.

    Returns ``{label value: segment name}``: segment ``k`` of ``segment_ids`` gets value k+1.
    """
    import slicer
    import vtk

    from .nodes import write_volume

    if not segment_ids:
        raise ValueError(_("Choose at least one segment."))
    scene = segmentation_node.GetScene()
    with scratch_nodes(scene):
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "CTNormalize temp labelmap")
        ids = vtk.vtkStringArray()
        for sid in segment_ids:
            ids.InsertNextValue(sid)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap, reference_volume)
        if not ok:
            raise RuntimeError(_("Could not export the segments to a labelmap."))
        write_volume(labelmap, path)
    seg = segmentation_node.GetSegmentation()
    return {k + 1: seg.GetSegment(sid).GetName() for k, sid in enumerate(segment_ids)}


def import_mask_as_segment(mask_path: str, segmentation_node, name: str, color=(1.0, 1.0, 0.0),
                           terminology: Optional[str] = None, label: Optional[int] = None) -> str:
    """Add a mask file as a new segment (non-zero, or ``== label``, is inside); returns the segment id."""
    import slicer
    import vtk

    from .nodes import read_volume

    scene = segmentation_node.GetScene()
    with scratch_nodes(scene):
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "CTNormalize temp mask")
        read_volume(mask_path, labelmap)
        arr = slicer.util.arrayFromVolume(labelmap)
        inside = arr != 0 if label is None else arr == label
        arr[...] = inside
        slicer.util.arrayFromVolumeModified(labelmap)
        seg = segmentation_node.GetSegmentation()
        sid = seg.AddEmptySegment("", name, list(color))
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(sid)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
                labelmap, segmentation_node, ids):
            raise RuntimeError(_("Could not import the mask {path} as a segment.").format(path=mask_path))
    if terminology:
        seg.GetSegment(sid).SetTerminology(terminology)
    return sid


def new_segmentation(scene, name: str, reference_volume, view_node_ids: Sequence[str] = ()):
    """A new segmentation on ``reference_volume``'s grid, shown only in the given views."""
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    seg.CreateDefaultDisplayNodes()
    seg.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    display = seg.GetDisplayNode()
    if display is not None:
        display.RemoveAllViewNodeIDs()
        for view_id in view_node_ids:
            display.AddViewNodeID(view_id)
    return seg
