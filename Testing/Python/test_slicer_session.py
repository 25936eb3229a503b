"""A radiologist's session with the CTNormalize module, on real MRML (slicer-core) and the real engine.

Apply on the defaults (``source="auto"``) with DICOM tags and without; non-CT refusal; engine
errors in the panel's words; scene close during a run; node counts before and after every
kind of run; per-volume emphysema segmentations; the results layout; compare tools; exports;
sample data; dependency installs.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core (the headless 3D Slicer wheel) is not installed")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "CTNormalize"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from CTNormalizeSlicerLib import (compare, dependencies, export, messages, nodes, sampledata,  # noqa: E402
                                  segments, tables, tags, views)
from CTNormalizeSlicerLib.logic import NormalizationLogic  # noqa: E402
from CTNormalizeSlicerLib.process import RunState  # noqa: E402
from mrml_scene import make_mrml_scene  # noqa: E402
from test_slicer_logic import _phantom, _segmentation, _volume  # noqa: E402

pytestmark = pytest.mark.slicer
TARGET = "kernel=smooth,dose=1,thickness=2"


@pytest.fixture()
def mrml(tmp_path):
    m = make_mrml_scene()
    logic = NormalizationLogic(scene=m.scene, appLogic=m.app)
    logic.tempRoot = str(tmp_path)
    m.logic, m.tmp = logic, tmp_path
    yield m
    logic.shutdown()


class FakeDatabase:
    """The two ctkDICOMDatabase calls the module makes."""

    def __init__(self, values):
        self.values = values

    def fileForInstance(self, uid):
        return "/dicom/series/1.dcm" if uid == "1.2.3.1" else ""

    def fileValue(self, path, tag):
        return self.values.get(tag, "")


@pytest.fixture(scope="module")
def sim_folder(tmp_path_factory):
    """The module's simulated chest sample, small, generated once for these tests."""
    folder = tmp_path_factory.mktemp("sample")
    shape = sampledata.SIMULATED_SHAPE
    sampledata.SIMULATED_SHAPE = (24, 96, 96)
    try:
        sampledata.simulated_chest(folder)
    finally:
        sampledata.SIMULATED_SHAPE = shape
    return folder


@pytest.fixture(scope="module")
def full_sim_folder(tmp_path_factory):
    """The sample at its shipped size (32 slices of 192 x 192): enough texture to measure the kernel."""
    folder = tmp_path_factory.mktemp("sample_full")
    sampledata.simulated_chest(folder)
    return folder


def _sim_volume(scene, folder, keep_tags=False):
    """The simulated chest as a node; without its acquisition attributes unless ``keep_tags``."""
    path = next(Path(folder).glob("*.nrrd"))
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "chest")
    nodes.read_volume(str(path), node)
    if keep_tags:
        node.SetAttribute("DICOM.ConvolutionKernel", "sharp")
    return node


def _counts(scene) -> dict:
    out = {}
    for i in range(scene.GetNumberOfNodes()):
        cls = scene.GetNthNode(i).GetClassName()
        out[cls] = out.get(cls, 0) + 1
    return out


def _tmp_entries(tmp) -> list:
    return [p for p in os.listdir(tmp) if p.startswith("CTNormalize")]


# -- Apply on the defaults -----------------------------------------------------------------
def test_auto_source_with_dicom_tags_reaches_the_engine(mrml, monkeypatch, sim_folder):
    """The defaults (source auto) work for a DICOM-loaded volume: its tags travel with it."""
    monkeypatch.setattr(slicer, "dicomDatabase", FakeDatabase(
        {"0018,1210": "B70f", "0018,0050": "2.0", "0008,0060": "CT", "0008,0070": "SIEMENS"}), raising=False)
    node = _sim_volume(mrml.scene, sim_folder)
    node.SetAttribute("DICOM.instanceUIDs", "1.2.3.1 1.2.3.2")
    run = mrml.logic.startNormalization(node, TARGET, source="auto", method="mtf_ratio", device="cpu")
    assert run.wait(timeout=240) is RunState.COMPLETED, (run.error_code, run.error_message)
    report = json.loads(nodes.provenance(run.outputNode)["report"])
    src = report["plan"]["source"]
    assert src["kernel_name"] == "B70f"  # only the DICOM database says B70f
    assert src["thickness"] == 2
    # the tag (very-sharp) is a prior: the pixels of this sharp simulation are read (small 12 mm air
    # ROIs fit its 77 mm field of view), and the disagreement is said
    codes = {w["code"] for w in report["plan"]["warnings"]}
    assert src["kernel"] == "very-sharp" or "KERNEL_TAG_DISAGREES" in codes, (src["kernel"], codes)
    assert nodes.provenance(run.outputNode)["runId"] == run.id


def test_auto_source_on_a_tagless_volume(mrml, full_sim_folder):
    """No tags at all (a sharp-kernel scan from a file): the engine detects the kernel from the pixels."""
    node = _sim_volume(mrml.scene, full_sim_folder)
    assert tags.volume_tags(node) == {}
    run = mrml.logic.startNormalization(node, TARGET, source="auto", method="mtf_ratio", device="cpu")
    assert run.wait(timeout=240) is RunState.COMPLETED, (run.error_code, run.error_message)
    src = json.loads(nodes.provenance(run.outputNode)["report"])["plan"]["source"]
    assert src["sources"]["kernel"]["source"] == "image"
    assert src["kernel"] in ("sharp", "very-sharp")  # the sample is simulated with the sharp kernel


def test_tags_from_subject_hierarchy_and_node_attributes(mrml):
    node = _volume(mrml.scene)
    node.SetAttribute("DICOM.ConvolutionKernel", "FC51")
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml.scene)
    item = sh.GetItemByDataNode(node) or sh.CreateItem(sh.GetSceneItemID(), node)
    sh.SetItemAttribute(item, "DICOM.Modality", "CT")
    sh.SetItemAttribute(item, "DICOM.Manufacturer", "TOSHIBA")
    found = tags.volume_tags(node)
    assert found == {"ConvolutionKernel": "FC51", "Modality": "CT", "Manufacturer": "TOSHIBA"}
    path = nodes.write_volume(node, str(mrml.tmp / "t.nrrd"), tags=found)
    from CTNormalizeLib.io import read_volume

    meta = read_volume(path).meta  # what the engine sees
    assert meta["ConvolutionKernel"] == "FC51" and meta["Manufacturer"] == "TOSHIBA"


def test_non_ct_is_refused_before_launch(mrml):
    mr = _volume(mrml.scene, "brain MR", arr=np.random.default_rng(0).uniform(0, 900, (8, 32, 32)).astype(np.float32))
    with pytest.raises(tags.NotCTVolumeError, match="brain MR"):
        mrml.logic.startNormalization(mr, TARGET, source="kernel=sharp,dose=1,thickness=2")
    ct = _volume(mrml.scene, "tagged MR")
    ct.SetAttribute("DICOM.Modality", "MR")
    with pytest.raises(tags.NotCTVolumeError, match="Modality"):
        mrml.logic.startNormalization(ct, TARGET)
    assert not mrml.logic.runs.live() and not _tmp_entries(mrml.tmp)  # nothing launched, nothing written


def test_engine_errors_in_the_panels_words(mrml):
    node = _volume(mrml.scene)
    run = mrml.logic.startNormalization(node, "kernel=nosuchkernel", source="kernel=sharp,dose=1,thickness=2",
                                        device="cpu")
    assert run.wait(timeout=120) is RunState.FAILED
    shown = messages.panel_message(run.error_code, run.error_message)
    assert "nosuchkernel" in shown and not messages.contains_cli_syntax(shown), shown
    engine_says = ("Could not determine the source kernel, dose from the image or its tags; give it explicitly, "
                   "e.g. --source kernel=sharp,dose=0.25,thickness=2.")
    shown = messages.panel_message("BAD_INPUT", engine_says)
    assert not messages.contains_cli_syntax(shown) and "Source protocol" in shown and "Kernel" in shown, shown
    shown = messages.panel_message("NO_MODEL", "Model 'x' does not cover a -> b. Use --method auto or a classical method.")
    assert not messages.contains_cli_syntax(shown) and "Method" in shown, shown
    assert messages.contains_cli_syntax("use --source kernel=sharp")  # the check itself can fail


# -- runs are safe -------------------------------------------------------------------------
def _busy_run(mrml):
    rng = np.random.default_rng(5)
    arr = np.full((40, 160, 160), -1000.0, np.float32)
    arr[:, 16:144, 16:144] = 40.0
    arr[:, 30:130, 24:76] = -850.0
    arr += rng.normal(0, 30, arr.shape).astype(np.float32)
    node = _volume(mrml.scene, "patient A", arr=arr, spacing=(0.8, 0.8, 1.0))
    run = mrml.logic.startNormalization(node, "kernel=smooth,dose=1,thickness=3", method="denoise",
                                        source="kernel=sharp,dose=0.25,thickness=1", device="cpu")
    deadline = time.monotonic() + 120
    while run.poll() is not RunState.IN_PROGRESS:
        assert not run.state.finished and time.monotonic() < deadline, run.error_message
        time.sleep(0.05)
    return node, run


def test_scene_close_during_a_run_cancels_it_and_discards_the_result(mrml):
    import psutil

    node, run = _busy_run(mrml)
    pid = run.proc.pid
    assert os.path.isdir(run.tempDir)
    mrml.scene.InvokeEvent(slicer.vtkMRMLScene.StartCloseEvent)  # what File > Close Scene sends first
    assert run.state is RunState.CANCELLED and "scene was closed" in run.error_message
    assert not os.path.exists(run.tempDir)  # patient data gone before the close goes on
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    mrml.scene.RemoveNode(node)
    patient_b = _volume(mrml.scene, "patient B")  # Slicer may hand out patient A's old node ID again
    n_volumes = mrml.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    run.poll()
    assert run.outputNode is None
    assert mrml.scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == n_volumes
    assert not mrml.logic.runs.live() and patient_b.GetName() == "patient B"


def test_module_shutdown_stops_every_run(mrml):
    _, run = _busy_run(mrml)
    assert mrml.logic.shutdown() == 1
    assert run.state is RunState.CANCELLED and not os.path.exists(run.tempDir)


def test_a_result_is_never_imported_into_the_next_scene(mrml):
    """Even a run that finished on its own after the close is matched by identity and dropped."""
    node = _volume(mrml.scene)
    run = mrml.logic.startNormalization(node, TARGET, source="kernel=sharp,dose=0.5,thickness=2",
                                        method="mtf_ratio", device="cpu")
    while run.proc.poll() is None:
        time.sleep(0.05)
    mrml.logic.runs.generation += 1  # as after a scene close that came between exit and import
    assert run.wait(timeout=60) is RunState.FAILED and "scene was closed" in run.error_message
    assert run.outputNode is None


# -- the scene stays clean -----------------------------------------------------------------
def test_no_orphan_nodes_after_radiomics_and_emphysema(mrml):
    scene = mrml.scene
    a = _volume(scene, "original")
    b = _volume(scene, "normalized", arr=_phantom(seed=1))
    seg, _, _ = _segmentation(scene, a)
    before = _counts(scene)
    rad = mrml.logic.startRadiomics(a, b, seg, segments.segment_ids_by_name(seg, ["nodule"]))
    assert rad.wait(timeout=240) is RunState.COMPLETED, rad.error_message
    emph = mrml.logic.startEmphysema(a, b, seg, segments.segment_ids_by_name(seg, ["lung"])[0])
    assert emph.wait(timeout=240) is RunState.COMPLETED, emph.error_message
    after = _counts(scene)
    added = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
    added = {k: v for k, v in added.items() if v}
    # two result tables, two mask segmentations with their display nodes: nothing else
    assert added == {"vtkMRMLTableNode": 2, "vtkMRMLSegmentationNode": 2,
                     "vtkMRMLSegmentationDisplayNode": 2}, added
    assert seg.GetSegmentation().GetNumberOfSegments() == 2


def test_emphysema_masks_in_their_own_segmentation_and_view(mrml):
    scene = mrml.scene
    a = _volume(scene, "original")
    b = _volume(scene, "normalized", arr=_phantom(seed=1))
    run = mrml.logic.startEmphysema(a, b)
    assert run.wait(timeout=240) is RunState.COMPLETED, run.error_message
    seg_a, seg_b = run.maskSegmentationNodes
    red, yellow = (views.slice_node(scene, n).GetID() for n in ("Red", "Yellow"))
    assert seg_a.GetDisplayNode().GetViewNodeIDs() == (red,) and seg_b.GetDisplayNode().GetViewNodeIDs() == (yellow,)
    assert seg_a.GetDisplayNode().IsDisplayableInView(red) and not seg_a.GetDisplayNode().IsDisplayableInView(yellow)
    emph = [seg_a.GetSegmentation().GetNthSegment(i) for i in range(3)][2]
    assert "87433001^Pulmonary emphysema" in emph.GetTerminology()
    lung = seg_a.GetSegmentation().GetNthSegment(0)
    assert "39607008^Lung" in lung.GetTerminology() and "24028007^Right" in lung.GetTerminology()


def test_results_layout_keeps_the_side_by_side_views(mrml):
    scene = mrml.scene
    table_view = scene.AddNode(slicer.vtkMRMLTableViewNode())  # the layout manager makes it inside Slicer
    table_view.SetSingletonTag(views.TABLE_VIEW)
    table_view.SetLayoutName(views.TABLE_VIEW)
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", "results")
    a, b = _volume(scene, "a"), _volume(scene, "b")
    mrml.logic.compare(a, b)
    assert mrml.logic.showResults(table) == views.RESULTS_LAYOUT
    lnode = views.layout_node(scene)
    xml = lnode.GetLayoutDescription(views.RESULTS_LAYOUT)
    assert lnode.GetViewArrangement() == views.RESULTS_LAYOUT
    assert 'singletontag="Red"' in xml and 'singletontag="Yellow"' in xml and "vtkMRMLTableViewNode" in xml
    assert table_view.GetTableNodeID() == table.GetID()
    assert views.composite_node(scene, "Yellow").GetBackgroundVolumeID() == b.GetID()


# -- compare tools -------------------------------------------------------------------------
def test_difference_checkerboard_fader_and_synced_window(mrml):
    scene = mrml.scene
    a = _volume(scene, "original")
    arr_b = slicer.util.arrayFromVolume(a).astype(np.int16) + 7
    b = _volume(scene, "normalized", arr=arr_b.astype(np.float32))
    diff = mrml.logic.differenceVolume(a, b)
    assert np.all(slicer.util.arrayFromVolume(diff) == 7)
    assert mrml.logic.differenceVolume(a, b) is diff  # updated, not duplicated
    # another pair gets its own node: A's difference is neither overwritten nor left under B's name
    c = _volume(scene, "other")
    d = _volume(scene, "other normalized", arr=slicer.util.arrayFromVolume(c).astype(np.float32) - 3)
    other = mrml.logic.differenceVolume(c, d)
    assert other is not diff and other.GetName() == "other normalized - other"
    assert diff.GetName() == "normalized - original" and np.all(slicer.util.arrayFromVolume(diff) == 7)
    cb = slicer.util.arrayFromVolume(mrml.logic.checkerboardVolume(a, b, squareMm=8.0))
    va, vb = slicer.util.arrayFromVolume(a), slicer.util.arrayFromVolume(b)
    assert np.all((cb == va) | (cb == vb)) and (cb == va).any() and (cb == vb).any()
    assert np.array_equal(cb[:, :10, :10], va[:, :10, :10])  # first 8 mm square (10 voxels of 0.8 mm)
    comp = mrml.logic.setFader(a, b, 0.3)
    assert comp.GetForegroundVolumeID() == b.GetID() and comp.GetForegroundOpacity() == pytest.approx(0.3)
    mrml.logic.compare(a, b)
    a.GetDisplayNode().SetWindowLevel(800, -200)
    assert (b.GetDisplayNode().GetWindow(), b.GetDisplayNode().GetLevel()) == (800, -200)
    b.GetDisplayNode().SetWindowLevel(350, 40)
    assert (a.GetDisplayNode().GetWindow(), a.GetDisplayNode().GetLevel()) == (350, 40)
    thick = _volume(scene, "thick", arr=_phantom(z=6), spacing=(0.8, 0.8, 4.0))
    with pytest.raises(ValueError, match="different grids"):
        mrml.logic.differenceVolume(a, thick)


def test_lung_hu_histogram_plot(mrml):
    scene = mrml.scene
    a = _volume(scene, "original")
    b = _volume(scene, "normalized", arr=_phantom(seed=1) - 40.0)  # darker lungs
    made = mrml.logic.histogramPlot(a, b)
    chart = made["chart"]
    assert chart.IsA("vtkMRMLPlotChartNode") and chart.GetNumberOfPlotSeriesNodes() == 2
    t = made["table"]
    assert tables.column_names(t) == ["HU", "original", "normalized"]
    rows = np.array([[float(v) for v in r] for r in tables.iter_rows(t)])
    assert rows[:, 1].sum() == pytest.approx(100, abs=1) and rows[:, 2].sum() == pytest.approx(100, abs=1)
    mean = lambda col: (rows[:, 0] * rows[:, col]).sum() / rows[:, col].sum()  # noqa: E731
    assert mean(2) < mean(1) - 20  # the darker lungs show up left of the original
    n = scene.GetNumberOfNodes()
    assert mrml.logic.histogramPlot(a, b)["chart"] is chart and scene.GetNumberOfNodes() == n


# -- saving and exporting ------------------------------------------------------------------
def test_save_results_and_dicom_export_through_the_engine_writer(mrml, monkeypatch):
    scene = mrml.scene
    node = _volume(scene)
    run = mrml.logic.startNormalization(node, TARGET, source="kernel=sharp,dose=0.5,thickness=2",
                                        method="mtf_ratio", device="cpu")
    assert run.wait(timeout=240) is RunState.COMPLETED, run.error_message
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", "Emphysema chest")
    tables.fill_table(table, [("region", "string"), ("original", "double")], [["whole", 1.5]])
    files = export.save_results(str(mrml.tmp / "out"), [table], run.outputNode)
    names = sorted(os.path.basename(f) for f in files)
    assert names[0] == "Emphysema_chest.csv" and any(n.endswith("_report.html") for n in names)
    html = Path([f for f in files if f.endswith(".html")][0]).read_text()
    assert "mtf_ratio" in html and "Research use" in html
    calls = {}

    class Written:
        series_instance_uid, n_files, warnings = "1.2.826.0.1.9", 12, [{"code": "NO_PATIENT_DATA"}]

    stub = types.ModuleType("CTNormalizeLib.io.dicom_write")
    stub.derivation_from_report = lambda report: ("derivation", report["method"])
    stub.write_derived_series = lambda out, folder, source, derivation: (
        calls.update(out=out, folder=folder, source=source, derivation=derivation) or Written())
    monkeypatch.setitem(sys.modules, "CTNormalizeLib.io.dicom_write", stub)
    import CTNormalizeLib.io

    # once the real writer was imported, `from CTNormalizeLib.io import dicom_write` finds the attribute
    monkeypatch.setattr(CTNormalizeLib.io, "dicom_write", stub, raising=False)
    imported = []
    got = export.export_dicom(run.outputNode, node, import_folder=imported.append)
    assert got["series_instance_uid"] == "1.2.826.0.1.9" and imported == [calls["folder"]]
    assert calls["derivation"][0] == "derivation" and calls["derivation"][1].endswith("mtf_ratio")
    assert calls["out"].hu.shape == slicer.util.arrayFromVolume(run.outputNode).shape
    assert not os.path.exists(calls["folder"])  # the temp copy is gone once imported
    # another scan chosen as the original would file the series under its patient: refused, nothing written
    prior = _volume(scene, "patient B prior", arr=_phantom(z=8, seed=3))
    calls.clear()
    with pytest.raises(ValueError, match="was made from 'chest', not from 'patient B prior'"):
        export.export_dicom(run.outputNode, prior, import_folder=imported.append)
    assert not calls
    assert nodes.input_of(run.outputNode) is node
    # a result imported before the reference existed: the original is accepted when its name is the recorded one
    run.outputNode.SetNodeReferenceID(nodes.INPUT_REFERENCE, None)
    assert export.export_dicom(run.outputNode, node, import_folder=imported.append)["files"] == 12
    with pytest.raises(ValueError, match="no longer in the scene"):
        export.export_dicom(run.outputNode, prior, import_folder=imported.append)
    nodes.set_input_of(run.outputNode, node)
    scene.RemoveNode(node)
    with pytest.raises(ValueError, match="no longer in the scene"):
        export.export_dicom(run.outputNode, None, import_folder=imported.append)


# -- sample data and dependencies ----------------------------------------------------------
def test_simulated_sample_loads_and_normalizes_on_the_defaults(mrml, sim_folder):
    """The sample data (a file, not DICOM) carries its acquisition, so Apply on the defaults works."""
    node = sampledata.load_simulated_chest(mrml.scene, folder=sim_folder)
    assert node.GetAttribute("DICOM.ConvolutionKernel") == "sharp"
    assert tags.volume_tags(node)["SliceThickness"] == "2"
    run = mrml.logic.startNormalization(node, "emphysema-reference", device="cpu")  # every default
    assert run.wait(timeout=300) is RunState.COMPLETED, (run.error_code, run.error_message)
    assert json.loads(nodes.provenance(run.outputNode)["report"])["plan"]["source"]["kernel"] == "sharp"


def test_the_simulated_sample_asks_for_the_engines_packages_first(mrml, sim_folder, monkeypatch):
    """Sample Data runs the engine's simulator inside Slicer's Python, which lacks some of its packages
    (pyyaml): the sample's loader makes sure of them, as Apply does, before the simulator is imported."""
    registered, order = {}, []
    fake_sampledata = types.SimpleNamespace(SampleDataLogic=types.SimpleNamespace(
        registerCustomSampleDataSource=lambda **kw: registered.setdefault(kw["sampleName"], kw)))
    monkeypatch.setitem(sys.modules, "SampleData", fake_sampledata)
    monkeypatch.setitem(sys.modules, "slicer.i18n", types.SimpleNamespace(tr=lambda text: text))
    monkeypatch.setattr(dependencies, "ensure", lambda sets, requester="": order.append(("ensure", sets)))
    monkeypatch.setattr(sampledata, "load_simulated_chest",
                        lambda *a, **k: order.append(("load",)) or _volume(mrml.scene))
    monkeypatch.setattr(slicer.util, "setSliceViewerLayers", lambda **kw: None)
    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", lambda *a, **k: contextlib.nullcontext())  # needs Qt
    sampledata.register()
    registered[sampledata.SIMULATED_NAME]["customDownloader"]()
    assert order[0] == ("ensure", [dependencies.ENGINE_REQUIREMENTS]) and order[1] == ("load",)


def test_installs_pin_slicers_packages_and_stop_when_declined(monkeypatch):
    pins = dependencies.constraints_text()
    import numpy
    import scipy

    assert f"numpy=={numpy.__version__}" in pins and f"scipy=={scipy.__version__}" in pins
    assert "SimpleITK==" in pins
    calls = []
    fake_util = types.SimpleNamespace(confirmOkCancelDisplay=lambda text, windowTitle=None: False,
                                      pip_install=lambda args: calls.append(list(args)),
                                      createProgressDialog=None, confirmYesNoDisplay=lambda *a, **k: False)
    monkeypatch.setattr(slicer, "util", types.SimpleNamespace(**{**vars(slicer.util), **vars(fake_util)}))
    monkeypatch.setattr(dependencies, "_packaging", lambda s: None)  # Slicer 5.10: no slicer.packaging
    need = {"no_such_module_ctn": "no-such-package-ctn>=1"}
    with pytest.raises(dependencies.DependencyError, match="declined"):
        dependencies.ensure([need])
    assert calls == []
    slicer.util.confirmOkCancelDisplay = lambda text, windowTitle=None: True
    dependencies.ensure([need], extra_args=["--only-binary=:all:"])
    args = calls[0]
    assert args[0] == "--only-binary=:all:" and "no-such-package-ctn>=1" in args and args[args.index("-c") + 1]
    monkeypatch.setitem(sys.modules, "PyTorchUtils", types.SimpleNamespace(
        PyTorchUtilsLogic=lambda: types.SimpleNamespace(installTorch=lambda **k: None)))
    monkeypatch.setattr(dependencies, "torch_installed", lambda: False)
    with pytest.raises(dependencies.DependencyError, match="PyTorch was not installed"):
        dependencies.ensure_torch(ask=True)


def test_auto_asks_for_torch_only_when_a_model_would_run(mrml, monkeypatch):
    from CTNormalizeLib.methods import get_method
    from CTNormalizeLib.plan import make_plan

    from CTNormalizeSlicerLib import choices

    node = _volume(mrml.scene)
    assert mrml.logic.methodNeedsTorch("mtf_ratio", node) is False
    models = [r.name for r in choices.method_table() if r.kind == "model"]
    if models:
        assert mrml.logic.methodNeedsTorch(models[0], node) is True
    src, tgt = "kernel=sharp,dose=0.5,thickness=2", "kernel=smooth,dose=1,thickness=2"
    plan = make_plan(nodes.volume_for_engine(node), src, tgt, method="auto", device="cpu")  # the engine's choice
    assert mrml.logic.methodNeedsTorch("auto", node, src, tgt) is get_method(plan.method).needs_torch
    classical_only = [r for r in choices.method_table() if r.kind != "model"]
    monkeypatch.setattr(choices, "method_table", lambda: classical_only)
    assert mrml.logic.methodNeedsTorch("auto", node, src, tgt) is False  # no model installed: never ask


def test_packages_installed_means_no_planning_on_the_main_thread(mrml, monkeypatch):
    """With torch and MONAI installed Apply does not plan "auto" in Slicer's process (measuring the input and a
    reference scan there blocks the UI for seconds); without them it asks the planner, as before."""
    from CTNormalizeSlicerLib import dependencies

    node = _volume(mrml.scene)
    src, tgt = "kernel=sharp,dose=0.5,thickness=2", "kernel=smooth,dose=1,thickness=2"
    asked = []
    monkeypatch.setattr(type(mrml.logic), "methodNeedsTorch", lambda self, *a, **k: asked.append(a) or True)
    monkeypatch.setattr(dependencies, "model_dependencies_installed", lambda: True)
    assert mrml.logic.modelPackagesToInstall("auto", node, src, tgt, node) is False and not asked
    monkeypatch.setattr(dependencies, "model_dependencies_installed", lambda: False)
    assert mrml.logic.modelPackagesToInstall("auto", node, src, tgt, node) is True and len(asked) == 1
