"""Compare views: side-by-side linked slice views in a CT window, and a 2x3 layout.

Works on MRML only (layout node, slice composite nodes, display nodes), so it runs the
same inside Slicer (where the layout manager follows the layout node) and headless.
"""

from __future__ import annotations

from typing import Iterable, Optional

from .i18n import _

#: (window, level) in HU. Lung and bone are Slicer's own CT presets (VolumeDisplayPresets.json:
#: CT-Lung 1400/-500, CT-Bone 1000/400); mediastinum is the usual soft-tissue chest window.
WINDOW_PRESETS = {
    "lung": (1400.0, -500.0),
    "mediastinum": (350.0, 40.0),
    "bone": (1000.0, 400.0),
}

SIDE_BY_SIDE_LAYOUT = 29  # vtkMRMLLayoutNode.SlicerLayoutSideBySideView
#: A free id for the 2x3 layout (Slicer's own layouts stay below 100; user layouts above).
COMPARE_2X3_LAYOUT = 5829
#: Side-by-side slice views on top, the results table and the HU histogram plot below.
RESULTS_LAYOUT = 5830
TABLE_VIEW, PLOT_VIEW = "TableView1", "PlotView1"
ORIENTATIONS = ("Axial", "Coronal", "Sagittal")
SIDE_BY_SIDE_VIEWS = ("Red", "Yellow")
#: Top row: original; bottom row: normalized; columns follow ORIENTATIONS.
GRID_VIEWS = (("Red", "Green", "Yellow"), ("Slice4", "Slice5", "Slice6"))
_VIEW_STYLE = {"Red": ("R", "#F34A33"), "Green": ("G", "#6EB04B"), "Yellow": ("Y", "#EDD54C"),
               "Slice4": ("4", "#8C8C8C"), "Slice5": ("5", "#8C8C8C"), "Slice6": ("6", "#8C8C8C")}


def apply_window(volume_nodes: Iterable, preset: str = "lung") -> tuple[float, float]:
    """Set a fixed window/level preset on every volume's display node; returns (W, L)."""
    if preset not in WINDOW_PRESETS:
        raise ValueError(f"Unknown window preset {preset!r}; known: {', '.join(WINDOW_PRESETS)}.")
    window, level = WINDOW_PRESETS[preset]
    for node in volume_nodes:
        if node is None:
            continue
        display = node.GetDisplayNode()
        if display is None:
            node.CreateDefaultDisplayNodes()
            display = node.GetDisplayNode()
        display.AutoWindowLevelOff()
        display.SetWindowLevel(window, level)
    return window, level


def layout_node(scene):
    """The scene's layout node (created by the layout logic / layout manager)."""
    node = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if node is None:
        raise RuntimeError(_("The scene has no layout node; views cannot be arranged."))
    return node


def slice_node(scene, view_name: str):
    """The slice node of the slice view ``view_name`` (e.g. "Red"), or None."""
    return scene.GetSingletonNode(view_name, "vtkMRMLSliceNode")


def composite_node(scene, view_name: str):
    """The slice composite node of the slice view ``view_name``, or None."""
    import slicer

    sn = slice_node(scene, view_name)
    return slicer.vtkMRMLSliceLogic.GetSliceCompositeNode(sn) if sn is not None else None


def _show(scene, view_name: str, volume_node, orientation: Optional[str]):
    comp = composite_node(scene, view_name)
    if comp is None:
        raise RuntimeError(_("The slice view {view} does not exist in this layout.").format(view=repr(view_name)))
    comp.SetBackgroundVolumeID(volume_node.GetID() if volume_node is not None else None)
    comp.SetForegroundVolumeID(None)
    comp.SetLabelVolumeID(None)
    comp.SetLinkedControl(True)
    comp.SetHotLinkedControl(True)
    sn = slice_node(scene, view_name)
    if sn is not None and orientation:
        sn.SetOrientation(orientation)
    return comp


def grid_layout_xml() -> str:
    """Layout description of the 2x3 grid: original on top, normalized below."""
    rows = []
    for row in GRID_VIEWS:
        items = []
        for name, orientation in zip(row, ORIENTATIONS):
            label, color = _VIEW_STYLE[name]
            items.append(
                f'<item><view class="vtkMRMLSliceNode" singletontag="{name}">'
                f'<property name="orientation" action="default">{orientation}</property>'
                f'<property name="viewlabel" action="default">{label}</property>'
                f'<property name="viewcolor" action="default">{color}</property>'
                f"</view></item>")
        rows.append('<item><layout type="horizontal">' + "".join(items) + "</layout></item>")
    return '<layout type="vertical">' + "".join(rows) + "</layout>"


def register_grid_layout(scene) -> int:
    """Add the 2x3 layout to the layout node (once); returns its id."""
    node = layout_node(scene)
    if not node.IsLayoutDescription(COMPARE_2X3_LAYOUT):
        node.AddLayoutDescription(COMPARE_2X3_LAYOUT, grid_layout_xml())
    return COMPARE_2X3_LAYOUT


def show_side_by_side(scene, original, normalized, orientation: str = "Axial",
                      window: Optional[str] = "lung") -> list:
    """Side-by-side layout: original in Red (left), normalized in Yellow (right).

    Both views get the same orientation and linked + hot-linked slice controls, so pan,
    zoom and slice offset follow each other. Returns the two composite nodes.
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {', '.join(ORIENTATIONS)}, not {orientation!r}.")
    layout_node(scene).SetViewArrangement(SIDE_BY_SIDE_LAYOUT)
    comps = [_show(scene, view, vol, orientation)
             for view, vol in zip(SIDE_BY_SIDE_VIEWS, (original, normalized))]
    if window:
        apply_window([original, normalized], window)
    return comps


def show_grid(scene, original, normalized, window: Optional[str] = "lung") -> list:
    """The 2x3 layout: axial/coronal/sagittal of the original (top) and normalized (bottom).

    The slice views of the new layout exist once the layout manager has built it (inside
    Slicer this happens during ``SetViewArrangement``). Returns the composite nodes found.
    """
    node = layout_node(scene)
    register_grid_layout(scene)
    node.SetViewArrangement(COMPARE_2X3_LAYOUT)
    comps = []
    for row, vol in zip(GRID_VIEWS, (original, normalized)):
        for view, orientation in zip(row, ORIENTATIONS):
            if composite_node(scene, view) is not None:
                comps.append(_show(scene, view, vol, orientation))
    if window:
        apply_window([original, normalized], window)
    return comps


def _slice_item(name: str, orientation: str) -> str:
    label, color = _VIEW_STYLE[name]
    return (f'<item><view class="vtkMRMLSliceNode" singletontag="{name}">'
            f'<property name="orientation" action="default">{orientation}</property>'
            f'<property name="viewlabel" action="default">{label}</property>'
            f'<property name="viewcolor" action="default">{color}</property></view></item>')


def results_layout_xml(orientation: str = "Axial") -> str:
    """Original | normalized slice views on top; results table | HU histogram below."""
    top = "".join(_slice_item(n, orientation) for n in SIDE_BY_SIDE_VIEWS)
    bottom = (f'<item><view class="vtkMRMLTableViewNode" singletontag="{TABLE_VIEW}">'
              '<property name="viewlabel" action="default">T</property></view></item>'
              f'<item><view class="vtkMRMLPlotViewNode" singletontag="{PLOT_VIEW}">'
              '<property name="viewlabel" action="default">P</property></view></item>')
    return ('<layout type="vertical" split="true">'
            f'<item splitSize="600"><layout type="horizontal">{top}</layout></item>'
            f'<item splitSize="400"><layout type="horizontal">{bottom}</layout></item></layout>')


def show_results(scene, table_node=None, chart_node=None, app_logic=None) -> int:
    """Switch to the results layout (keeping the side-by-side views) and show a table / plot.

    The table and plot view nodes exist once the layout manager has built the layout; the
    selection node is set too, so Slicer's own propagation shows them when it builds them later.
    """
    node = layout_node(scene)
    if not node.IsLayoutDescription(RESULTS_LAYOUT):
        node.AddLayoutDescription(RESULTS_LAYOUT, results_layout_xml())
    node.SetViewArrangement(RESULTS_LAYOUT)
    table_view = scene.GetSingletonNode(TABLE_VIEW, "vtkMRMLTableViewNode")
    plot_view = scene.GetSingletonNode(PLOT_VIEW, "vtkMRMLPlotViewNode")
    if table_node is not None and table_view is not None:
        table_view.SetTableNodeID(table_node.GetID())
    if chart_node is not None and plot_view is not None:
        plot_view.SetPlotChartNodeID(chart_node.GetID())
    selection = app_logic.GetSelectionNode() if app_logic is not None else None
    if selection is not None:
        if table_node is not None:
            selection.SetActiveTableID(table_node.GetID())
            app_logic.PropagateTableSelection()
        if chart_node is not None:
            selection.SetActivePlotChartID(chart_node.GetID())
            app_logic.PropagatePlotChartSelection()
    return RESULTS_LAYOUT


class WindowLevelSync:
    """Keep window/level equal on two volumes: a change on either is copied to the other."""

    def __init__(self, a, b):
        import vtk

        self.nodes = []
        self._tags = []
        self._busy = False
        for node in (a, b):
            if node.GetDisplayNode() is None:
                node.CreateDefaultDisplayNodes()
            self.nodes.append(node.GetDisplayNode())
        for src, dst in ((self.nodes[0], self.nodes[1]), (self.nodes[1], self.nodes[0])):
            tag = src.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, ev, dst=dst: self._copy(caller, dst))
            self._tags.append((src, tag))
        self._copy(self.nodes[0], self.nodes[1])

    def _copy(self, src, dst):
        if self._busy:
            return
        if dst.GetWindow() == src.GetWindow() and dst.GetLevel() == src.GetLevel():
            return
        self._busy = True
        try:
            dst.AutoWindowLevelOff()
            dst.SetWindowLevel(src.GetWindow(), src.GetLevel())
        finally:
            self._busy = False

    def stop(self):
        for node, tag in self._tags:
            node.RemoveObserver(tag)
        self._tags = []


def fit_slices(app_logic) -> None:
    """Fit every slice view to its background volume, keeping orientations."""
    if app_logic is not None:
        # resetOrientation=False: keep the orientation chosen for the comparison.
        app_logic.FitSliceToBackground(False, False)
