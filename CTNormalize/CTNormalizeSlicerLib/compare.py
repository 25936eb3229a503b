"""What the two volumes differ by: difference and checkerboard volumes, a fader, an HU histogram.

All of it is computed from the nodes' voxels with numpy and put in the scene as ordinary
nodes next to the original (same study), named after it; calling again updates the same
nodes instead of adding new ones.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from . import nodes, views
from .i18n import _

HISTOGRAM_RANGE = (-1100.0, -300.0)  # HU: lung parenchyma, emphysema and the air below it
HISTOGRAM_BIN = 10.0  # HU


def _same_grid_arrays(original, normalized):
    import slicer

    if original is None or normalized is None:
        raise ValueError(_("Select the original and the normalized volume."))
    if not nodes.same_grid(original, normalized):
        raise ValueError(_("The two volumes are on different grids (the slice thickness was changed), "
                           "so they cannot be subtracted or interleaved voxel by voxel."))
    return slicer.util.arrayFromVolume(original), slicer.util.arrayFromVolume(normalized)


def _derived_volume(scene, name: str, like, array, existing=None):
    """A scalar volume with ``like``'s geometry holding ``array`` (reusing ``existing``)."""
    import slicer
    import vtk

    node = existing if existing is not None and scene.IsNodePresent(existing) else \
        scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    m = vtk.vtkMatrix4x4()
    like.GetIJKToRASMatrix(m)
    node.SetIJKToRASMatrix(m)
    node.SetAndObserveTransformNodeID(like.GetTransformNodeID())
    slicer.util.updateVolumeFromArray(node, array)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    nodes.place_next_to(node, like)
    return node


def difference_volume(scene, original, normalized, existing=None):
    """``normalized - original`` in HU (int16 when both are integer), windowed at ±150 HU."""
    a, b = _same_grid_arrays(original, normalized)
    integer = np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)
    diff = b.astype(np.int32) - a.astype(np.int32) if integer else b.astype(np.float32) - a.astype(np.float32)
    if integer:
        diff = np.clip(diff, -32768, 32767).astype(np.int16)
    node = _derived_volume(scene, f"{normalized.GetName()} - {original.GetName()}", original, diff, existing)
    display = node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(300.0, 0.0)
    node.SetAttribute("CTNormalize.derived", "difference")
    return node


def checkerboard_volume(scene, original, normalized, square_mm: float = 20.0, existing=None):
    """In-plane squares of ``square_mm`` taken alternately from the original and the normalized volume."""
    a, b = _same_grid_arrays(original, normalized)
    if square_mm <= 0:
        raise ValueError(_("The checkerboard square size must be positive."))
    sx, sy, _sz = original.GetSpacing()
    ny, nx = a.shape[1], a.shape[2]
    iy = (np.arange(ny) * sy // square_mm).astype(np.int64)
    ix = (np.arange(nx) * sx // square_mm).astype(np.int64)
    take_b = ((iy[:, None] + ix[None, :]) % 2).astype(bool)
    out = np.where(take_b[None, :, :], b, a.astype(b.dtype, copy=False))
    node = _derived_volume(scene, f"{original.GetName()} | {normalized.GetName()} checkerboard", original, out,
                           existing)
    views.apply_window([node], "lung")
    node.SetAttribute("CTNormalize.derived", "checkerboard")
    return node


def set_fader(scene, original, normalized, opacity: float, view: str = "Red"):
    """Show ``normalized`` over ``original`` in one slice view; ``opacity`` 0 = original, 1 = normalized."""
    comp = views.composite_node(scene, view)
    if comp is None:
        raise RuntimeError(_("The slice view {view} does not exist in this layout.").format(view=repr(view)))
    comp.SetBackgroundVolumeID(original.GetID())
    comp.SetForegroundVolumeID(normalized.GetID())
    comp.SetForegroundOpacity(float(min(max(opacity, 0.0), 1.0)))
    return comp


def lung_histograms(original, normalized, bin_hu: float = HISTOGRAM_BIN, hu_range=HISTOGRAM_RANGE) -> dict:
    """``{"hu": centers, "original": %, "normalized": %}`` of the HU inside each volume's lungs.

    The lungs are the engine's threshold lung mask of each volume on its own grid, so a
    volume with another slice thickness is measured on its own voxels.
    """
    import slicer

    from CTNormalizeLib.classical.masks import lung_mask

    edges = np.arange(hu_range[0], hu_range[1] + bin_hu, bin_hu)
    out = {"hu": (edges[:-1] + edges[1:]) / 2.0}
    for key, node in (("original", original), ("normalized", normalized)):
        hu = np.asarray(slicer.util.arrayFromVolume(node), dtype=np.float32)
        sx, sy, sz = node.GetSpacing()
        values = hu[lung_mask(hu, (sz, sy, sx))]
        counts, _edges = np.histogram(values, bins=edges)
        out[key] = 100.0 * counts / max(int(values.size), 1)
    return out


def histogram_plot(scene, original, normalized, existing: Optional[dict] = None) -> dict:
    """The lung HU histograms of both volumes as a plot chart (table, two series, chart node).

    Returns ``{"table", "original", "normalized", "chart"}``; pass it back as ``existing``
    to update the same nodes.
    """
    import slicer

    from .tables import fill_table

    h = lung_histograms(original, normalized)
    existing = {k: v for k, v in (existing or {}).items() if v is not None and scene.IsNodePresent(v)}
    made = dict(existing)
    if "table" not in made:
        made["table"] = scene.AddNewNodeByClass("vtkMRMLTableNode", f"Lung HU histogram {original.GetName()}")
    fill_table(made["table"], [("HU", "double"), ("original", "double"), ("normalized", "double")],
               [[hu, o, n] for hu, o, n in zip(h["hu"], h["original"], h["normalized"])],
               units={"HU": "HU", "original": "%", "normalized": "%"})
    colors = {"original": (0.2, 0.4, 0.9), "normalized": (0.9, 0.4, 0.1)}
    for key in ("original", "normalized"):
        if key not in made:
            made[key] = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{key} lung HU")
        series = made[key]
        series.SetAndObserveTableNodeID(made["table"].GetID())
        series.SetXColumnName("HU")
        series.SetYColumnName(key)
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
        series.SetColor(*colors[key])
    if "chart" not in made:
        made["chart"] = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"Lung HU histogram {original.GetName()}")
    chart = made["chart"]
    chart.RemoveAllPlotSeriesNodeIDs()
    for key in ("original", "normalized"):
        chart.AddAndObservePlotSeriesNodeID(made[key].GetID())
    chart.SetTitle("HU inside the lungs")
    chart.SetXAxisTitle("HU")
    chart.SetYAxisTitle("% of lung voxels")
    return made
