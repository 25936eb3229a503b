"""The CTNormalize Slicer module's logic against real MRML (the ``slicer-core`` wheel).

Covers: volume node -> temp NRRD -> real engine child process -> node round trip; output
naming, provenance and subject hierarchy; lung window; side-by-side and 2x3 layouts with
linked composite nodes; segments -> labelmap -> radiomics / emphysema tables and mask
segments. Skipped only when slicer-core cannot be imported.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (the headless 3D Slicer wheel) is not installed")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "CTNormalize"))

from CTNormalizeSlicerLib import nodes, segments, tables, tags, views  # noqa: E402
from CTNormalizeSlicerLib.logic import PROTOCOL_FIELDS, NormalizationLogic  # noqa: E402
from CTNormalizeSlicerLib.process import RunState  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mrml_scene import make_mrml_scene  # noqa: E402

pytestmark = pytest.mark.slicer

@pytest.fixture()
def mrml(tmp_path):
    """A real MRML scene with application, color, segmentation, layout and slice logics."""
    m = make_mrml_scene()
    scene, app, layout_logic, slice_logics = m.scene, m.app, m.layout, m.slice_logics
    logic = NormalizationLogic(scene=scene, appLogic=app)
    logic.tempRoot = str(tmp_path)
    yield type("MRML", (), {"scene": scene, "app": app, "layout": layout_logic, "logic": logic,
                            "slice_logics": slice_logics, "tmp": tmp_path})


def _phantom(z=12, y=48, x=48, seed=0):
    """A small chest-like phantom in HU: air outside, body, two lungs with low-HU spots."""
    rng = np.random.default_rng(seed)
    a = np.full((z, y, x), -1000.0, np.float32)
    a[:, 6:42, 4:44] = 40.0
    a[:, 12:36, 8:21] = -860.0
    a[:, 12:36, 27:40] = -860.0
    a[:, 16:22, 10:15] = -980.0
    a[:, 26:32, 30:36] = -975.0
    a += rng.normal(0, 25, a.shape).astype(np.float32)
    return a


def _volume(scene, name="chest", arr=None, spacing=(0.8, 0.8, 2.0), origin=(10.0, -20.0, 30.0)):
    import vtk

    arr = _phantom() if arr is None else arr
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    img = vtk.vtkImageData()
    img.SetDimensions(arr.shape[2], arr.shape[1], arr.shape[0])
    img.AllocateScalars(vtk.VTK_SHORT, 1)
    node.SetAndObserveImageData(img)
    node.SetSpacing(*spacing)
    node.SetOrigin(*origin)
    m = vtk.vtkMatrix4x4()
    m.SetElement(0, 0, -1.0)
    m.SetElement(1, 1, -1.0)
    node.SetIJKToRASDirectionMatrix(m)
    slicer.util.updateVolumeFromArray(node, np.round(arr).astype(np.int16))
    node.CreateDefaultDisplayNodes()
    return node


def _matrix(node):
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(i, j) for j in range(4)] for i in range(4)])


# -- files ---------------------------------------------------------------------------------
def test_write_read_round_trip_keeps_geometry_and_data(mrml):
    node = _volume(mrml.scene)
    path = nodes.write_volume(node, str(mrml.tmp / "x.nrrd"))
    out = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "back")
    nodes.read_volume(path, out)
    nodes.adopt_geometry(out, node)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(out), slicer.util.arrayFromVolume(node))
    np.testing.assert_array_equal(_matrix(out), _matrix(node))
    assert out.GetStorageNode() is None  # the result does not point at a temp file


def test_volume_for_engine_is_lps_itk_order(mrml):
    import SimpleITK as sitk

    node = _volume(mrml.scene)
    vol = nodes.volume_for_engine(node, {"ConvolutionKernel": "B70f"})
    path = nodes.write_volume(node, str(mrml.tmp / "y.nrrd"))
    img = sitk.ReadImage(path)
    np.testing.assert_allclose(vol.origin, img.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(vol.direction, img.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(vol.spacing, img.GetSpacing()[::-1], atol=1e-6)
    assert vol.meta["ConvolutionKernel"] == "B70f"
    assert vol.hu.shape == sitk.GetArrayFromImage(img).shape


# -- the real engine -----------------------------------------------------------------------
SOURCE = "kernel=sharp,dose=0.5,thickness=2"
TARGET = "kernel=smooth,dose=1,thickness=2"


def test_normalization_round_trip_with_real_engine(mrml):
    scene = mrml.scene
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "patient"), "study")
    node = _volume(scene)
    if sh.GetItemByDataNode(node):
        sh.SetItemParent(sh.GetItemByDataNode(node), study)
    else:  # Slicer's subject hierarchy plugins add items; the bare wheel scene does not
        sh.CreateItem(study, node)
    before = slicer.util.arrayFromVolume(node).copy()
    events = []
    run = mrml.logic.startNormalization(node, TARGET, source=SOURCE, method="auto", device="cpu",
                                        onEvent=lambda r, e: events.append(e["event"]))
    state = run.wait(timeout=240)
    assert state is RunState.COMPLETED, (run.error_code, run.error_message, run.log_lines[-10:])
    out = run.outputNode
    # naming, data, geometry
    assert out.GetName() == f"chest \u2192 {TARGET}"
    result = slicer.util.arrayFromVolume(out)
    assert result.shape == before.shape
    np.testing.assert_array_equal(_matrix(out), _matrix(node))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), before)  # input untouched
    assert not np.array_equal(result, before)  # something was done
    assert np.corrcoef(result.ravel(), before.ravel())[0, 1] > 0.9  # same anatomy, same orientation
    # The node holds exactly what the engine makes of that volume on disk.
    import subprocess

    import SimpleITK as sitk

    ref_in = nodes.write_volume(node, str(mrml.tmp / "ref_in.nrrd"))
    ref_out = str(mrml.tmp / "ref_out.nrrd")
    subprocess.run([sys.executable, "-m", "CTNormalizeLib", "normalize", ref_in, "-o", ref_out, "--source",
                    SOURCE, "--target", TARGET, "--device", "cpu", "--progress", "none"],
                   check=True, cwd=str(ROOT), timeout=240)
    ref = sitk.ReadImage(ref_out)
    np.testing.assert_allclose(result, sitk.GetArrayFromImage(ref), atol=1e-3)
    np.testing.assert_allclose(out.GetSpacing(), ref.GetSpacing(), atol=1e-5)
    # provenance attributes
    prov = nodes.provenance(out)
    for key in ("engineVersion", "method", "modelSha256", "protocolPair", "qc", "report",
                "sourceProtocol", "targetProtocol"):
        assert key in prov, key
    from CTNormalizeLib import __version__

    assert prov["engineVersion"] == __version__
    assert "->" in prov["protocolPair"] and "smooth" in prov["targetProtocol"]
    assert isinstance(json.loads(prov["qc"]), dict)
    assert prov["runId"] == run.id and prov["inputName"] == "chest"  # matched by run identity, not node ID
    # next to the input in the subject hierarchy
    assert sh.GetItemParent(sh.GetItemByDataNode(out)) == study
    # events seen and temp folder removed
    assert events[0] == "started" and "progress" in events and "done" in events
    assert not os.path.exists(run.tempDir)


def test_normalization_to_look_like_a_reference_scan(mrml):
    """Target "like a reference scan": the reference travels to the engine (--target-like), the
    engine plans its target from that scan's measured signature, and the result is named for it."""
    scene = mrml.scene
    node = _volume(scene)
    ref = _volume(scene, "smooth reference", arr=_smooth_phantom(), spacing=(0.8, 0.8, 3.0))
    run = mrml.logic.startNormalization(node, "", source=SOURCE, method="classical", device="cpu", targetLikeNode=ref)
    assert "--target-like" in run.args and "--target" not in run.args
    assert run.wait(timeout=240) is RunState.COMPLETED, (run.error_code, run.error_message, run.log_lines[-10:])
    out = run.outputNode
    assert out.GetName() == "chest → like smooth reference"
    prov = nodes.provenance(out)
    assert prov["targetName"] == "like smooth reference"
    report = json.loads(prov["report"])
    assert report["plan"]["target_signature"]["origin"] == "reference", report["plan"]["target_signature"]
    from CTNormalizeLib.signature import measure_signature

    measured = measure_signature(nodes.volume_for_engine(ref, {}))
    assert report["plan"]["target_signature"]["transfer"]["f50"] == pytest.approx(measured.transfer.f50, rel=1e-3)
    assert "smooth reference.nrrd" in json.dumps(report["plan"])  # named after the node, not a temp name
    assert abs(out.GetSpacing()[2] - 3.0) < 0.2  # the reference's thickness, measured from its z spacing
    assert not os.path.exists(run.tempDir)
    mr = _volume(scene, "MR", arr=np.random.default_rng(0).uniform(0, 900, (8, 32, 32)).astype(np.float32))
    with pytest.raises(Exception, match="cannot be the reference scan"):
        mrml.logic.startNormalization(node, "", source=SOURCE, device="cpu", targetLikeNode=mr)
    with pytest.raises(ValueError, match="reference scan"):
        mrml.logic.startNormalization(node, "", source=SOURCE, device="cpu")
    clash = _volume(scene, "input", arr=_smooth_phantom())  # a reference named like the engine's input file
    run = mrml.logic.startNormalization(node, "", source=SOURCE, method="classical", device="cpu", targetLikeNode=clash)
    assert run.args[run.args.index("--target-like") + 1] != run.args[run.args.index("normalize") + 1]
    assert run.wait(timeout=240) is RunState.COMPLETED, (run.error_code, run.error_message)


def _smooth_phantom():
    from scipy.ndimage import gaussian_filter

    a = _phantom(seed=7)
    return gaussian_filter(a, (0, 1.2, 1.2)).astype(np.float32)


def test_normalization_bad_target_shows_engine_message(mrml):
    node = _volume(mrml.scene)
    n_volumes = mrml.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    run = mrml.logic.startNormalization(node, "kernel=nosuchkernel", source=SOURCE, device="cpu")
    state = run.wait(timeout=120)
    assert state is RunState.FAILED
    assert run.returncode == 2 and run.error_code == "BAD_INPUT"
    assert "nosuchkernel" in run.error_message  # the engine's own sentence
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == n_volumes  # no empty output
    assert not os.path.exists(run.tempDir)


def test_a_failed_import_leaves_no_volume_and_the_panel_hears_of_it_first(mrml, monkeypatch):
    """The import ends a run: the panel's "import" event comes before the run's end (the panel's "Loading the
    result..." is then overwritten by "Done", not the other way round). An import that fails (here: a report
    this module cannot read) removes the volume it made: nothing without provenance stays in the scene."""
    from CTNormalizeLib.contracts.report import RunReport

    node = _volume(mrml.scene)
    seen = []
    run = mrml.logic.startNormalization(node, TARGET, source=SOURCE, method="classical", device="cpu",
                                        onEvent=lambda r, e: seen.append((e["event"], r.state)))
    assert run.wait(timeout=240) is RunState.COMPLETED
    assert ("import", RunState.IMPORT_RESULTS) in seen  # heard before the import ended the run
    n_volumes = mrml.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")

    def unreadable(d):
        raise TypeError("missing 8 required positional arguments")

    monkeypatch.setattr(RunReport, "from_dict", staticmethod(unreadable))
    run = mrml.logic.startNormalization(node, TARGET, source=SOURCE, method="classical", device="cpu")
    assert run.wait(timeout=240) is RunState.FAILED and run.error_code == "IMPORT"
    assert "run report is not readable" in run.error_message
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == n_volumes
    # a failure after the volume was read (its display and storage nodes made too) leaves no node of it either
    monkeypatch.undo()
    before = nodes.node_ids(mrml.scene)

    def broken(*a, **k):
        raise RuntimeError("provenance failed")

    monkeypatch.setattr(nodes, "set_provenance", broken)
    run = mrml.logic.startNormalization(node, TARGET, source=SOURCE, method="classical", device="cpu")
    assert run.wait(timeout=240) is RunState.FAILED and run.error_code == "IMPORT"
    assert nodes.node_ids(mrml.scene) == before


def test_blocking_normalization_raises_with_engine_message(mrml):
    node = _volume(mrml.scene)
    with pytest.raises(RuntimeError, match="nosuchkernel"):
        mrml.logic.runNormalization(node, TARGET, source="kernel=nosuchkernel", device="cpu", timeout=120)


def test_bad_input_raises_before_launch(mrml):
    node = _volume(mrml.scene)
    with pytest.raises(ValueError):
        mrml.logic.startNormalization(None, TARGET)
    with pytest.raises(ValueError):
        mrml.logic.startNormalization(node, "")
    with pytest.raises(ValueError):
        mrml.logic.startNormalization(node, TARGET, outputNode=node)
    reference = _volume(mrml.scene, "reference")
    with pytest.raises(ValueError, match="reference scan"):
        mrml.logic.startNormalization(node, "", outputNode=reference, targetLikeNode=reference)
    with pytest.raises(ValueError):
        mrml.logic.startNormalization(node, TARGET, device="tpu")


def test_source_spec_and_names(mrml):
    from CTNormalizeLib.errors import BadInputError

    lg = NormalizationLogic
    assert lg.sourceSpec() == "auto"
    assert lg.sourceSpec("B70f", 0.25, 2) == "kernel=B70f,dose=0.25,thickness=2"
    assert lg.sourceSpec("", 0.5, 0) == "dose=0.5"
    with pytest.raises(BadInputError):
        lg.sourceSpec("Q99zz")
    # the slice profile: an axial scan's rectangle, sent with the thickness it shapes; Detected sends nothing
    assert lg.sourceSpec("", 0, 3, "rect") == "thickness=3,profile=rect"
    assert lg.sourceSpec("", 0, 3, "detected") == "thickness=3"
    with pytest.raises(BadInputError, match="needs the thickness"):
        lg.sourceSpec("", 0, 0, "rect")
    from CTNormalizeLib.protocols import parse_spec

    assert parse_spec(lg.sourceSpec("B70f", 0.25, 3, "rect")).ssp_fwhm < 3.0
    assert "emphysema-reference" in lg.presets()
    names = [m for m, _ in lg.methods()]
    assert names[0] == "auto" and "mtf_ratio" in names
    kernels = lg.kernelChoices()
    assert kernels[:4] == ["smooth", "standard", "sharp", "very-sharp"] and "B70f" in kernels


def test_the_target_choice_is_resolved_by_the_logic(mrml):
    """Preset, typed spec or reference scan: what the engine gets, resolved where a script can use it too."""
    from CTNormalizeSlicerLib.choices import CUSTOM, LIKE

    ref = _volume(mrml.scene, "reference")
    assert mrml.logic.targetChoice("emphysema-reference", "ignored", ref) == ("emphysema-reference", None)
    assert mrml.logic.targetChoice(CUSTOM, " kernel=smooth,dose=1 ", None) == ("kernel=smooth,dose=1", None)
    assert mrml.logic.targetChoice(LIKE, "ignored", ref) == ("", ref)
    with pytest.raises(ValueError, match="reference scan"):
        mrml.logic.targetChoice(LIKE, "", None)
    with pytest.raises(ValueError, match="Type the target protocol"):
        mrml.logic.targetChoice(CUSTOM, "  ", None)


def test_detect_source_protocol_from_node(mrml):
    node = _volume(mrml.scene)
    proto = mrml.logic.detectSourceProtocol(node)
    rows = {r[0]: r for r in mrml.logic.protocolRows(proto)}
    assert set(PROTOCOL_FIELDS) <= set(rows)
    # no DICOM tags here: whatever was found came from the image (or a default), and says so
    for field in PROTOCOL_FIELDS:
        if rows[field][1] != "unknown":
            assert rows[field][2], field
    with pytest.raises(ValueError):
        mrml.logic.detectSourceProtocol(None)
    assert mrml.logic.methodNeedsTorch("mtf_ratio") is False


def test_protocol_rows_show_sources():
    from CTNormalizeLib.protocols import parse_spec

    rows = NormalizationLogic.protocolRows(parse_spec("kernel=B70f,dose=0.25"))
    by = {r[0]: r for r in rows}
    assert by["kernel"][1] == "B70f (very-sharp)" or "B70f" in by["kernel"][1]
    assert by["kernel"][2].startswith("user")
    assert by["thickness"][1] == "unknown"


# -- views ---------------------------------------------------------------------------------
def test_lung_window_on_both_display_nodes(mrml):
    a, b = _volume(mrml.scene, "a"), _volume(mrml.scene, "b")
    mrml.logic.setWindowPreset([a, b], "lung")
    for n in (a, b):
        d = n.GetDisplayNode()
        assert not d.GetAutoWindowLevel()
        assert d.GetWindow() == pytest.approx(1400) and d.GetLevel() == pytest.approx(-500)  # Slicer's CT-Lung
    mrml.logic.setWindowPreset([a, b], "mediastinum")
    assert (b.GetDisplayNode().GetWindow(), b.GetDisplayNode().GetLevel()) == pytest.approx((350, 40))
    mrml.logic.setWindowPreset([a, b], "bone")
    assert (a.GetDisplayNode().GetWindow(), a.GetDisplayNode().GetLevel()) == pytest.approx((1000, 400))
    with pytest.raises(ValueError):
        views.apply_window([a], "brain")


def test_side_by_side_layout_with_linked_composite_nodes(mrml):
    scene = mrml.scene
    a, b = _volume(scene, "original"), _volume(scene, "normalized")
    comps = mrml.logic.compare(a, b, layout="sideBySide", orientation="Coronal")
    assert views.layout_node(scene).GetViewArrangement() == 29
    red = views.composite_node(scene, "Red")
    yellow = views.composite_node(scene, "Yellow")
    assert comps == [red, yellow]
    assert red.GetBackgroundVolumeID() == a.GetID()
    assert yellow.GetBackgroundVolumeID() == b.GetID()
    for c in (red, yellow):
        assert c.GetLinkedControl() and c.GetHotLinkedControl()
        assert c.GetForegroundVolumeID() is None
    for name in ("Red", "Yellow"):
        assert views.slice_node(scene, name).GetOrientation() == "Coronal"
    assert a.GetDisplayNode().GetWindow() == pytest.approx(1400)
    assert b.GetDisplayNode().GetLevel() == pytest.approx(-500)


def test_grid_layout_registered_and_filled(mrml):
    scene = mrml.scene
    for name in ("Slice4", "Slice5", "Slice6"):  # the layout manager creates these inside Slicer
        sl = slicer.vtkMRMLSliceLogic()
        sl.SetMRMLApplicationLogic(mrml.app)
        mrml.app.GetSliceLogics().AddItem(sl)
        sl.SetMRMLScene(scene)
        sn = scene.GetSingletonNode(name, "vtkMRMLSliceNode")
        if sn is None:
            sn = scene.CreateNodeByClass("vtkMRMLSliceNode")  # takes the scene's default presets
            sn.SetLayoutName(name)
            scene.AddNode(sn)
        sl.SetSliceNode(sn)
        mrml.slice_logics.append(sl)
    a, b = _volume(scene, "original"), _volume(scene, "normalized")
    comps = mrml.logic.compare(a, b, layout="grid")
    lnode = views.layout_node(scene)
    assert lnode.GetViewArrangement() == views.COMPARE_2X3_LAYOUT
    xml = lnode.GetLayoutDescription(views.COMPARE_2X3_LAYOUT)
    assert xml.count("vtkMRMLSliceNode") == 6 and "Sagittal" in xml
    assert len(comps) == 6
    for row, vol in zip(views.GRID_VIEWS, (a, b)):
        for view, orientation in zip(row, views.ORIENTATIONS):
            c = views.composite_node(scene, view)
            assert c.GetBackgroundVolumeID() == vol.GetID() and c.GetLinkedControl()
            assert views.slice_node(scene, view).GetOrientation() == orientation


# -- segments and quantification -----------------------------------------------------------
def _segmentation(scene, volume):
    """Two box segments ('nodule' and 'lung') on the volume's grid."""
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "segs")
    seg.CreateDefaultDisplayNodes()
    seg.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    shape = slicer.util.arrayFromVolume(volume).shape
    nodule = np.zeros(shape, np.uint8)
    nodule[3:9, 14:24, 9:19] = 1
    lung = np.zeros(shape, np.uint8)
    lung[:, 12:36, 8:21] = 1
    lung[:, 12:36, 27:40] = 1
    for name, arr in (("nodule", nodule), ("lung", lung)):
        sid = seg.GetSegmentation().AddEmptySegment("", name)
        slicer.util.updateSegmentBinaryLabelmapFromArray(arr, seg, sid, volume)
    return seg, nodule, lung


def test_segments_export_to_labelmap_values_in_order(mrml):
    vol = _volume(mrml.scene)
    seg, nodule, lung = _segmentation(mrml.scene, vol)
    ids = segments.segment_ids_by_name(seg, ["lung", "nodule"])
    path = str(mrml.tmp / "lab.nrrd")
    names = segments.export_labelmap(seg, ids, vol, path)
    assert names == {1: "lung", 2: "nodule"}
    import SimpleITK as sitk

    lab = sitk.GetArrayFromImage(sitk.ReadImage(path))
    assert lab.shape == nodule.shape
    assert np.array_equal(lab == 2, nodule.astype(bool))
    assert np.array_equal(lab == 1, lung.astype(bool) & ~nodule.astype(bool))
    with pytest.raises(ValueError):
        segments.segment_ids_by_name(seg, ["liver"])


def test_mask_file_imports_as_segment(mrml):
    vol = _volume(mrml.scene)
    seg, nodule, _ = _segmentation(mrml.scene, vol)
    path = str(mrml.tmp / "mask.nrrd")
    segments.export_labelmap(seg, segments.segment_ids_by_name(seg, ["nodule"]), vol, path)
    sid = segments.import_mask_as_segment(path, seg, "Emphysema (original)")
    got = slicer.util.arrayFromSegmentBinaryLabelmap(seg, sid, vol)
    assert np.array_equal(got.astype(bool), nodule.astype(bool))
    assert seg.GetSegmentation().GetSegment(sid).GetName() == "Emphysema (original)"


def test_radiomics_table_columns_and_difference(mrml):
    from CTNormalizeLib.contracts.results import RadiomicsReport

    table = mrml.scene.AddNewNodeByClass("vtkMRMLTableNode", "rad")
    feats = [
        {"segment": "label_1", "label": 1, "image": "original", "feature": "original_firstorder_Mean", "value": -100.0},
        {"segment": "label_1", "label": 1, "image": "normalized", "feature": "original_firstorder_Mean", "value": -90.0},
        {"segment": "label_1", "label": 1, "image": "original", "feature": "original_firstorder_Range", "value": 200.0},
        {"segment": "label_1", "label": 1, "image": "normalized", "feature": "original_firstorder_Range", "value": 220.0},
        {"segment": "label_1", "label": 1, "image": "original", "feature": "diagnostics_Versions_PyRadiomics", "value": "v3"},
        {"segment": "label_1", "label": 1, "image": "normalized", "feature": "diagnostics_Versions_PyRadiomics", "value": "v3"},
    ]
    report = RadiomicsReport.from_dict({"images": ["original", "normalized"], "features": feats, "comparison": [],
                                        "provenance": {"params_path": "ct.yaml", "pyradiomics_version": "3",
                                                       "engine_version": "0.1"}, "warnings": []})
    n = tables.radiomics_table(table, report, params_file="ct.yaml", segment_names={1: "nodule"})
    assert n == 2
    assert tables.column_names(table) == ["segment", "feature", "original", "normalized", "difference", "% difference"]
    mean, spread = list(tables.iter_rows(table))
    assert mean[0] == "nodule" and float(mean[4]) == pytest.approx(10.0)
    assert math.isnan(float(mean[5]))  # a position on the HU scale: a difference in HU, no percent
    assert float(spread[4]) == pytest.approx(20.0) and float(spread[5]) == pytest.approx(10.0)
    assert table.GetAttribute("CTNormalize.radiomicsParams") == "ct.yaml"
    assert math.isnan(tables.percent_difference(0.0, 1.0))


def test_emphysema_table_columns(mrml):
    from CTNormalizeLib.contracts.results import EmphysemaMeasurement

    table = mrml.scene.AddNewNodeByClass("vtkMRMLTableNode", "emph")

    def result(laa):
        stats = {"laa_percent": laa, "perc15_hu": -900.0, "lung_volume_ml": 100.0, "emphysema_volume_ml": 1.0,
                 "mean_hu": -850.0}
        return EmphysemaMeasurement.from_dict({
            "input": "x.nrrd", **stats, "per_lung": {"left": stats, "right": stats},
            "per_zone": {z: stats for z in ("upper", "middle", "lower")}, "warnings": [],
            "provenance": {"threshold_hu": -950, "threshold_rule": "HU < threshold", "mask_source": "engine",
                           "lung_method": "x", "engine_version": "0.1"}})

    n = tables.emphysema_table(table, result(10.0), result(7.5))
    assert tables.column_names(table) == ["region", "measure", "unit", "original", "normalized", "difference"]
    rows = list(tables.iter_rows(table))
    assert n == 18 and [r[0] for r in rows[::3]] == ["whole", "left", "right", "upper", "middle", "lower"]
    assert rows[0][1] == "LAA%" and float(rows[0][5]) == pytest.approx(-2.5)
    assert table.GetAttribute("CTNormalize.emphysemaThresholdHU") == "-950"


def test_radiomics_on_segments_with_real_engine(mrml):
    scene = mrml.scene
    a = _volume(scene, "original")
    b = _volume(scene, "normalized", arr=_phantom(seed=1))
    seg, _, _ = _segmentation(scene, a)
    run = mrml.logic.startRadiomics(a, b, seg, segments.segment_ids_by_name(seg, ["nodule"]))
    state = run.wait(timeout=240)
    assert state is RunState.COMPLETED, (run.error_message, run.log_lines[-10:])
    cols = tables.column_names(run.tableNode)
    assert cols == ["segment", "feature", "original", "normalized", "difference", "% difference"]
    rows = list(tables.iter_rows(run.tableNode))
    assert len(rows) > 10 and {r[0] for r in rows} == {"nodule"}
    mean = [r for r in rows if r[1].endswith("firstorder_Mean")]
    assert mean and float(mean[0][2]) < 0
    assert run.tableNode.GetAttribute("CTNormalize.radiomicsParams")
    assert not os.path.exists(run.tempDir)


def test_emphysema_with_lung_segment_and_mask_segments(mrml):
    scene = mrml.scene
    a = _volume(scene, "original")
    b = _volume(scene, "normalized", arr=_phantom(seed=1))
    seg, _, lung = _segmentation(scene, a)
    lung_id = segments.segment_ids_by_name(seg, ["lung"])[0]
    run = mrml.logic.startEmphysema(a, b, seg, lung_id, threshold=-950)
    state = run.wait(timeout=240)
    assert state is RunState.COMPLETED, (run.error_message, run.log_lines[-10:])
    rows = list(tables.iter_rows(run.tableNode))
    whole = {r[1]: r for r in rows if r[0] == "whole"}
    assert set(whole) == {"LAA%", "Perc15", "Lung volume"}
    # with the lung segment as the mask, LAA% is the share of its voxels below -950 HU in each volume
    for col, node in ((3, a), (4, b)):
        arr = slicer.util.arrayFromVolume(node)
        expected = 100.0 * np.mean(arr[lung > 0] < -950)
        assert float(whole["LAA%"][col]) == pytest.approx(expected, abs=0.01), (col, whole["LAA%"])
    assert 8.0 < expected < 12.0  # the two -980/-975 HU spots make about 9 %
    assert [s.GetName() for s in run.maskSegmentationNodes] == ["Emphysema original", "Emphysema normalized"]
    for mseg in run.maskSegmentationNodes:
        names = [mseg.GetSegmentation().GetNthSegment(i).GetName()
                 for i in range(mseg.GetSegmentation().GetNumberOfSegments())]
        assert names == ["Right lung", "Left lung", "Emphysema (< -950 HU)"], names
    assert seg.GetSegmentation().GetNumberOfSegments() == 2  # the user's segmentation is untouched
    # "Save results" finds the table in the scene, also for a new logic (module reload, scene loaded again)
    other_table = scene.AddNewNodeByClass("vtkMRMLTableNode", "a table of the user's")
    assert NormalizationLogic(scene=scene).resultTables() == [run.tableNode]
    assert other_table not in mrml.logic.resultTables()


def test_a_failed_emphysema_import_leaves_no_table_or_masks(mrml, monkeypatch):
    """The table is made first, the mask segmentations after: when the import fails halfway, what it made goes."""
    scene = mrml.scene
    a = _volume(scene, "original")
    b = _volume(scene, "normalized", arr=_phantom(seed=1))
    before = nodes.node_ids(scene)

    def broken(*args, **kwargs):
        raise RuntimeError("segment import failed")

    monkeypatch.setattr(mrml.logic, "_maskSegmentation", broken)
    run = mrml.logic.startEmphysema(a, b, threshold=-950)
    assert run.wait(timeout=240) is RunState.FAILED and run.error_code == "IMPORT"
    assert nodes.node_ids(scene) == before


def test_emphysema_when_normalized_volume_has_its_own_z_grid(mrml):
    """A thickness change gives the output another z grid: the lung mask follows each grid."""
    scene = mrml.scene
    a = _volume(scene, "original")
    thick = _phantom(z=6, seed=2)
    b = _volume(scene, "normalized", arr=thick, spacing=(0.8, 0.8, 4.0))
    assert not nodes.same_grid(a, b)
    seg, _, _ = _segmentation(scene, a)
    run = mrml.logic.startEmphysema(a, b, seg, segments.segment_ids_by_name(seg, ["lung"])[0], addMaskSegments=False)
    assert run.wait(timeout=240) is RunState.COMPLETED, (run.error_message, run.log_lines[-10:])
    whole = {r[1]: r for r in tables.iter_rows(run.tableNode) if r[0] == "whole"}
    assert float(whole["Lung volume"][4]) == pytest.approx(float(whole["Lung volume"][3]), rel=0.15)


def test_cancel_real_engine_run(mrml):
    """Cancel during the engine's work: exit 130, no output node, temp folder removed."""
    import time

    rng = np.random.default_rng(5)
    arr = np.full((40, 160, 160), -1000.0, np.float32)
    arr[:, 16:144, 16:144] = 40.0
    arr[:, 30:130, 24:76] = -850.0
    arr += rng.normal(0, 30, arr.shape).astype(np.float32)
    node = _volume(mrml.scene, "big", arr=arr, spacing=(0.8, 0.8, 1.0))
    n_volumes = mrml.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    # Non-local means keeps the engine busy for seconds (the learned model would finish first).
    run = mrml.logic.startNormalization(node, "kernel=smooth,dose=1,thickness=3", method="denoise",
                                        source="kernel=sharp,dose=0.25,thickness=1", device="cpu")
    deadline = time.monotonic() + 120
    while run.poll() is not RunState.IN_PROGRESS:  # "started": the engine is at work
        assert not run.state.finished, (run.error_message, run.log_lines[-5:])
        assert time.monotonic() < deadline
        time.sleep(0.05)
    t0 = time.monotonic()
    mrml.logic.cancel()
    state = run.wait(timeout=60)
    assert state is RunState.CANCELLED
    assert time.monotonic() - t0 < 15
    assert run.returncode == 130, (run.returncode, run.log_lines[-5:])  # the engine's own cancel, not a kill
    assert run.error_event is not None and run.error_event.code == "CANCELLED", run.error_event
    assert run.outputNode is None
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == n_volumes
    assert not os.path.exists(run.tempDir)


def test_detection_reads_dicom_tags_through_the_database(mrml, monkeypatch):
    """A volume loaded from DICOM carries instance UIDs; the tags come from the DICOM database."""
    class FakeDatabase:  # the two ctkDICOMDatabase calls the module makes
        values = {"0018,1210": "B70f", "0018,0050": "2.0", "0008,0060": "CT", "0008,0070": "SIEMENS"}

        def fileForInstance(self, uid):
            return "/dicom/1.dcm" if uid == "1.2.3.1" else ""

        def fileValue(self, path, tag):
            assert path == "/dicom/1.dcm"
            return self.values.get(tag, "")

    monkeypatch.setattr(slicer, "dicomDatabase", FakeDatabase(), raising=False)
    node = _volume(mrml.scene)
    assert tags.dicom_database_tags(node) == {}
    node.SetAttribute("DICOM.instanceUIDs", "1.2.3.1 1.2.3.2")
    found = tags.dicom_database_tags(node)
    assert found == {"ConvolutionKernel": "B70f", "SliceThickness": "2.0", "Modality": "CT", "Manufacturer": "SIEMENS"}
    proto = mrml.logic.detectSourceProtocol(node)
    rows = {r[0]: r for r in mrml.logic.protocolRows(proto)}
    assert "B70f" in rows["kernel"][1] and rows["kernel"][2].startswith("tag")
    assert rows["thickness"][1] == "2" and rows["thickness"][2].startswith("tag")
