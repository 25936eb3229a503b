"""Reader-study Logic on real MRML (slicer-core wheel): neutral nodes, layout, answers on disk."""

import builtins
import io
import json
import os
import sys
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the 'slicer' module here is not slicer-core", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "CTNormalizeReaderStudy"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from CTNormalizeReaderStudyLib.logic import OWNER_ATTRIBUTE, ReaderStudyLogic  # noqa: E402
from mrml_scene import make_mrml_scene  # noqa: E402
from test_readerstudy import make_manifest  # noqa: E402

from CTNormalizeLib.readerstudy import create_study  # noqa: E402
from CTNormalizeLib.readerstudy import design as D  # noqa: E402

pytestmark = pytest.mark.slicer


@pytest.fixture
def scene():
    """A scene with app logic, colors, layout node and slice logics (SLICER.md recipe)."""
    m = make_mrml_scene()
    scene, app = m.scene, m.app
    yield scene, app
    app.GetSliceLogics().RemoveAllItems()


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("rs")
    manifest = make_manifest(root / "data", n_cases=4, protocols=False)
    create_study(manifest, root / "single", "single", 1)
    create_study(manifest, root / "pair", "pair", 1, per_reader=True, readers=["ann", "bob"])
    return root, manifest


def _volume_nodes(scene):
    col = scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
    return [col.GetItemAsObject(i) for i in range(col.GetNumberOfItems())]


def _truth_words(manifest):
    import csv

    words = {"original", "normalized", "source", "TRUTHMARK", "PATIENT", "B70f", "B30f", str(manifest.parent)}
    return words | {r["case"] for r in csv.DictReader(open(manifest))}


def _never_open_key(monkeypatch):
    real_open, real_io_open, real_os_open = builtins.open, io.open, os.open

    def guard(fn):
        def wrapped(file, *a, **k):
            if str(file).endswith("key.json"):
                raise AssertionError("the reading side opened the key")
            return fn(file, *a, **k)
        return wrapped

    monkeypatch.setattr(builtins, "open", guard(real_open))
    monkeypatch.setattr(io, "open", guard(real_io_open))
    monkeypatch.setattr(os, "open", guard(real_os_open))


def test_loading_gives_neutral_nodes_and_layout(scene, studies, monkeypatch):
    scene, app = scene
    root, manifest = studies
    _never_open_key(monkeypatch)
    logic = ReaderStudyLogic(scene, app)
    session = logic.openStudy(str(root / "pair"), "ann")
    assert logic.progressText() == "Item 1 of 4 (0 answered)"
    nodes = logic.nodes
    item = session.item()
    assert sorted(nodes) == ["A", "B"]
    assert {n.GetName() for n in nodes.values()} == {f"Case {item['case']} A", f"Case {item['case']} B"}
    forbidden = _truth_words(manifest)
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    for node in _volume_nodes(scene):
        names = list(node.GetAttributeNames())
        assert names == [OWNER_ATTRIBUTE], names  # no DICOM or other attributes
        strings = [node.GetName(), node.GetDescription() or ""] + [node.GetAttribute(a) for a in names]
        sn = node.GetStorageNode()
        if sn is not None:
            strings.append(sn.GetFileName() or "")
        for s in strings:
            for w in forbidden:
                assert w not in s, (w, s)
        sh_item = sh.GetItemByDataNode(node)
        assert sh.GetItemParent(sh_item) == sh.GetSceneItemID()
        assert not list(sh.GetItemAttributeNames(sh_item))
        dn = node.GetDisplayNode()
        assert not dn.GetAutoWindowLevel() and (dn.GetWindow(), dn.GetLevel()) == (1500.0, -600.0)  # the study's own window (study.json)
        assert node.GetImageData().GetDimensions() == (32, 32, 8)
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    assert layout.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
    red = slicer.vtkMRMLSliceLogic.GetSliceCompositeNode(scene.GetSingletonNode("Red", "vtkMRMLSliceNode"))
    yellow = slicer.vtkMRMLSliceLogic.GetSliceCompositeNode(scene.GetSingletonNode("Yellow", "vtkMRMLSliceNode"))
    assert red.GetBackgroundVolumeID() == nodes["A"].GetID() and yellow.GetBackgroundVolumeID() == nodes["B"].GetID()
    assert red.GetLinkedControl() and yellow.GetHotLinkedControl()


def test_recording_writes_the_line_and_navigation(scene, studies, monkeypatch, tmp_path):
    scene, app = scene
    root, manifest = studies
    import shutil

    study = tmp_path / "single"
    shutil.copytree(root / "single", study)
    _never_open_key(monkeypatch)
    logic = ReaderStudyLogic(scene, app)
    logic.openStudy(str(study), "Dr. Reader")
    assert scene.GetFirstNodeByClass("vtkMRMLLayoutNode").GetViewArrangement() == \
        slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView
    assert len(_volume_nodes(scene)) == 1
    assert not logic.canGoNext() and not logic.canGoPrevious()
    assert not logic.isAnswerComplete({}) and logic.isAnswerComplete({"score": 0})
    logic.setWindowLevel(1000, -700)  # the reader changes the window
    line = logic.recordAnswer({"score": 2})
    path = logic.session.path
    on_disk = [json.loads(x) for x in path.read_text().splitlines()]
    assert on_disk == [line]
    assert line["score"] == 2 and line["window"] == {"width": 1000.0, "level": -700.0}
    assert line["time_spent_s"] >= 0 and line["item"] == logic.session.items[0]["id"]
    first = logic.nodes["A"]
    logic.next()
    assert first.GetScene() is None and len(_volume_nodes(scene)) == 1  # previous case removed
    assert logic.currentWindow() == {"width": 1500.0, "level": -600.0}  # the study's window again
    assert logic.progressText() == "Item 2 of 4 (1 answered)"
    logic.recordAnswer({"score": 5})
    logic.previous()
    assert logic.currentWindow() == {"width": 1000.0, "level": -700.0}  # the reader's window comes back
    logic.applyWindowPreset("mediastinum")
    logic.recordAnswer({"score": 3})  # revision
    logic.next()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["score"] for x in lines] == [2, 5, 3] and lines[-1]["revision"] == 1
    # Leaving an answered item after changing the window records the final window.
    logic.applyWindowPreset("bone")
    logic.next()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == 4 and lines[-1]["window"] == {"width": 1000.0, "level": 400.0} and lines[-1]["score"] == 5
    # Reopening (after a crash or restart) resumes at the first unanswered item.
    logic.closeStudy()
    assert not _volume_nodes(scene)
    again = ReaderStudyLogic(scene, app)
    again.openStudy(str(study), "Dr. Reader")
    assert again.session.index == 2 and again.progressText() == "Item 3 of 4 (2 answered)"


def test_unknown_reader_of_a_per_reader_study(scene, studies):
    scene, app = scene
    root, _ = studies
    from CTNormalizeLib.errors import BadInputError

    with pytest.raises(BadInputError, match="randomized per reader"):
        ReaderStudyLogic(scene, app).openStudy(str(root / "pair"), "eve")
    with pytest.raises(BadInputError, match="not a reader study"):
        ReaderStudyLogic(scene, app).openStudy(str(root), "ann")
    assert D.required_fields("pair") == ("original", "likert")


def test_two_readers_read_and_the_study_analyzes(scene, studies, tmp_path):
    """Two readers read the per-reader pair study interleaved; separate files; analysis sees both."""
    scene, app = scene
    root, _ = studies
    import shutil

    from CTNormalizeLib.readerstudy.analysis import analyze_study

    study = tmp_path / "pair"
    shutil.copytree(root / "pair", study)
    key = json.loads((study / "key.json").read_text())
    ann, bob = ReaderStudyLogic(scene, app), ReaderStudyLogic(slicer.vtkMRMLScene(), None)
    ann.openStudy(str(study), "ann")
    bob.openStudy(str(study), "bob")
    likert = {k: {"A": 3, "B": 4} for k in D.LIKERT_ITEMS}
    for k in range(4):
        for name, logic in (("ann", ann), ("bob", bob)):
            item = logic.session.item()
            truth = key["readers"][name][item["id"]]
            right = "A" if truth["A"] == "original" else "B"
            logic.recordAnswer({"original": right if name == "ann" else ("B" if right == "A" else "A"),
                                "likert": likert})
            if logic.canGoNext():
                logic.next()
    files = sorted(p.name for p in (study / "answers").glob("*.jsonl"))
    assert files == ["ann.jsonl", "bob.jsonl"]
    res = analyze_study(study)
    assert res["readers"]["ann"]["accuracy"] == 1.0 and res["readers"]["bob"]["accuracy"] == 0.0
    # Each reader is constant (always right / always wrong): no agreement beyond chance, kappa 0.
    assert res["agreement"]["n_subjects"] == 4 and res["agreement"]["cohen_kappa"] == 0.0
