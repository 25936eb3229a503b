"""Segments -> labelmap files for the engine, and engine masks -> segments."""

from __future__ import annotations

from typing import Optional, Sequence


def segment_ids_by_name(segmentation_node, names: Optional[Sequence[str]] = None) -> list[str]:
    """IDs of the named segments (all segments when ``names`` is empty)."""
    seg = segmentation_node.GetSegmentation()
    ids = [seg.GetNthSegmentID(i) for i in range(seg.GetNumberOfSegments())]
    if not names:
        return ids
    by_name = {seg.GetSegment(i).GetName(): i for i in ids}
    missing = [n for n in names if n not in by_name and n not in ids]
    if missing:
        raise ValueError(f"Segments not found in {segmentation_node.GetName()!r}: {', '.join(missing)}.")
    return [by_name.get(n, n) for n in names]


def export_labelmap(segmentation_node, segment_ids: Sequence[str], reference_volume, path: str) -> dict:
    """Write the segments as one labelmap on the reference volume's grid.

    Returns ``{label value: segment name}``: segment ``k`` of ``segment_ids`` gets value k+1.
    """
    import slicer
    import vtk

    from .nodes import write_volume

    if not segment_ids:
        raise ValueError("Choose at least one segment.")
    scene = segmentation_node.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "CTNormalize temp labelmap")
    try:
        ids = vtk.vtkStringArray()
        for sid in segment_ids:
            ids.InsertNextValue(sid)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap, reference_volume)
        if not ok:
            raise RuntimeError("Could not export the segments to a labelmap.")
        write_volume(labelmap, path)
    finally:
        scene.RemoveNode(labelmap)
    seg = segmentation_node.GetSegmentation()
    return {k + 1: seg.GetSegment(sid).GetName() for k, sid in enumerate(segment_ids)}


def import_mask_as_segment(mask_path: str, segmentation_node, name: str, color=(1.0, 1.0, 0.0)) -> str:
    """Add a binary mask file (non-zero = inside) as a new segment; returns the segment id."""
    import slicer
    import vtk

    from .nodes import read_volume

    scene = segmentation_node.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "CTNormalize temp mask")
    try:
        read_volume(mask_path, labelmap)
        arr = slicer.util.arrayFromVolume(labelmap)
        arr[arr != 0] = 1
        slicer.util.arrayFromVolumeModified(labelmap)
        seg = segmentation_node.GetSegmentation()
        sid = seg.AddEmptySegment("", name, list(color))
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(sid)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
                labelmap, segmentation_node, ids):
            raise RuntimeError(f"Could not import the mask {mask_path} as a segment.")
    finally:
        scene.RemoveNode(labelmap)
    return sid
