"""CTNormalize Reader Study: read a blinded study (made by ``ctnormalize study create``) in Slicer.

The behaviour lives in :class:`CTNormalizeReaderStudyLib.logic.ReaderStudyLogic` (MRML only,
tested headless on the slicer-core wheel); the widget here only maps buttons, keys and
fields to it. Every answer is appended and fsynced to ``answers/<reader>.jsonl`` the moment
it is complete, so closing or crashing Slicer loses nothing; reopening resumes at the first
unanswered item. The study key is never read here. The reading keys are active only while
this module is shown.
"""

import logging
import os
import sys

import qt
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# From the source tree the shared CTNormalize helpers sit in ../CTNormalize (installed: next to this file).
_HERE = os.path.dirname(os.path.abspath(__file__))
for _folder in (_HERE, os.path.join(os.path.dirname(_HERE), "CTNormalize")):
    if os.path.isdir(os.path.join(_folder, "CTNormalizeSlicerLib")) and _folder not in sys.path:
        sys.path.append(_folder)

from CTNormalizeReaderStudyLib.logic import ReaderStudyLogic  # noqa: E402

LIKERT_ITEMS = ("noise", "sharpness", "artifacts", "diagnostic")
SETTINGS_KEY = "CTNormalizeReaderStudy"


class CTNormalizeReaderStudy(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("CTNormalize Reader Study")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["CTNormalize developers"]
        self.parent.helpText = _(
            "Read a blinded reader study made with <tt>ctnormalize study create</tt>. Choose the study "
            "folder, enter your name and press Start. Each item shows one image (or two side by side) "
            "under a neutral name; answer with the buttons or keys (0-5 scores; Shift+A / Shift+B for "
            "the original side; Ctrl+Right / Ctrl+Left for next / previous). Every answer is saved at once; "
            "reopening the study resumes where you stopped. Research use only, not for diagnosis.")
        self.parent.acknowledgementText = _("Part of the CTNormalize extension (Apache License 2.0).")
        icon = os.path.join(_HERE, "Resources", "Icons", "CTNormalizeReaderStudy.png")
        if os.path.isfile(icon):
            self.parent.icon = qt.QIcon(icon)


class CTNormalizeReaderStudyWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """A thin widget: fields and keys to :class:`CTNormalizeReaderStudyLogic`."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.shortcuts = []
        self._updating = False

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CTNormalizeReaderStudy.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = CTNormalizeReaderStudyLogic()

        settings = qt.QSettings()
        self.ui.studyDirectoryButton.directory = settings.value(f"{SETTINGS_KEY}/studyDirectory", "") or ""
        self.ui.readerNameEdit.text = settings.value(f"{SETTINGS_KEY}/reader", "") or ""

        self.ui.openButton.clicked.connect(self.onOpen)
        self.ui.closeButton.clicked.connect(self.onClose)
        self.ui.previousButton.clicked.connect(self.onPrevious)
        self.ui.nextButton.clicked.connect(self.onNext)
        for k in range(6):
            getattr(self.ui, f"score{k}Button").clicked.connect(lambda checked=False, k=k: self.onScore(k))
        self.ui.originalAButton.clicked.connect(lambda checked=False: self.onOriginal("A"))
        self.ui.originalBButton.clicked.connect(lambda checked=False: self.onOriginal("B"))
        for item in LIKERT_ITEMS:
            for side in "AB":
                getattr(self.ui, f"{item}{side}SpinBox").valueChanged.connect(lambda value: self.onPairChanged())
        for combo in (self.ui.kernelComboBox, self.ui.doseComboBox, self.ui.thicknessComboBox):
            combo.currentIndexChanged.connect(lambda index: self.onProtocolChanged())
        self.ui.lungWindowButton.clicked.connect(lambda: self.logic.applyWindowPreset("lung"))
        self.ui.mediastinumWindowButton.clicked.connect(lambda: self.logic.applyWindowPreset("mediastinum"))
        self.ui.boneWindowButton.clicked.connect(lambda: self.logic.applyWindowPreset("bone"))

        # The scene may be closed under us: its nodes are gone, the answers are not.
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.updateGUI()

    def cleanup(self):
        self.removeObservers()
        self._removeShortcuts()

    def enter(self):
        if self.logic is not None and self.logic.session:
            self._installShortcuts()

    def exit(self):
        self._removeShortcuts()  # 0-5, Shift+A/B and Ctrl+arrows belong to other modules there

    # -- study ------------------------------------------------------------------------------------
    def onOpen(self):
        studyDir = self.ui.studyDirectoryButton.directory
        reader = self.ui.readerNameEdit.text.strip()
        try:  # Slicer's tryWithErrorDisplay shows the error, then raises it again: the panel follows either way
            with slicer.util.tryWithErrorDisplay(_("Could not open the study."), waitCursor=True):
                _ensurePackages()  # a protocol study needs pyyaml: ask now, not fail silently later
                self.logic.openStudy(studyDir, reader)
                settings = qt.QSettings()
                settings.setValue(f"{SETTINGS_KEY}/studyDirectory", studyDir)
                settings.setValue(f"{SETTINGS_KEY}/reader", reader)
                self._fillChoices()
                self._installShortcuts()
        finally:
            self.updateGUI()

    def onClose(self):
        try:  # a failed save keeps the study open (and says why), so the reader can try again
            with slicer.util.tryWithErrorDisplay(_("Could not save the reading and close the study.")):
                self.logic.saveWindowIfChanged()
                self.logic.closeStudy()
                self._removeShortcuts()
        finally:
            self.updateGUI()

    def onSceneEndClose(self, caller=None, event=None):
        if self.logic and self.logic.session:
            self.logic.nodes = {}
            with slicer.util.tryWithErrorDisplay(_("Could not reload the item.")):
                self.logic.loadItem()
            self.updateGUI()

    def _fillChoices(self):
        q = (self.logic.session.study.get("questions") or {}).get("protocol")
        self._updating = True
        try:
            if q:
                for combo, key, fmt in ((self.ui.kernelComboBox, "kernel", str),
                                        (self.ui.doseComboBox, "dose", lambda v: f"{v:g}"),
                                        (self.ui.thicknessComboBox, "thickness", lambda v: f"{v:g}")):
                    combo.clear()
                    combo.addItem("–", None)
                    for v in q[key]:
                        combo.addItem(fmt(v), v)
            labels = ((self.logic.session.study.get("questions") or {}).get("score") or {}).get("labels") or {}
            for k in range(6):
                text = labels.get(str(k))
                getattr(self.ui, f"score{k}Button").text = f"{k}  {text}" if text else str(k)
        finally:
            self._updating = False

    # -- keys ---------------------------------------------------------------------------------------
    def _installShortcuts(self):
        self._removeShortcuts()
        keys = {"Ctrl+Right": self.onNext, "Ctrl+Left": self.onPrevious}
        if self.logic.design == "single":
            for k in range(6):
                keys[str(k)] = lambda k=k: self.onScore(k)
        elif self.logic.design == "pair":
            keys["Shift+A"] = lambda: self.onOriginal("A")
            keys["Shift+B"] = lambda: self.onOriginal("B")
        for seq, fn in keys.items():
            sc = qt.QShortcut(qt.QKeySequence(seq), slicer.util.mainWindow())
            sc.connect("activated()", fn)
            self.shortcuts.append(sc)

    def _removeShortcuts(self):
        for sc in self.shortcuts:
            sc.setParent(None)
            sc.deleteLater()
        self.shortcuts = []

    # -- answers ------------------------------------------------------------------------------------
    def _save(self, answer):
        if not self.logic.session:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not save the answer."), waitCursor=False):
            line = self.logic.recordAnswer(answer)
            rev = line.get("revision", 0)
            self.ui.statusLabel.text = (_("Saved (revision {revision}).").format(revision=rev) if rev else
                                        _("Saved."))
        self.updateGUI()

    def onScore(self, k):
        if self.logic.design == "single":
            self._save({"score": int(k)})

    def onOriginal(self, side):
        if self.logic.design != "pair":
            return
        self._updating = True
        self.ui.originalAButton.checked = side == "A"
        self.ui.originalBButton.checked = side == "B"
        self._updating = False
        self.onPairChanged()

    def _pairDraft(self):
        original = "A" if self.ui.originalAButton.checked else "B" if self.ui.originalBButton.checked else None
        likert = {}
        for item in LIKERT_ITEMS:
            likert[item] = {}
            for side in "AB":
                v = getattr(self.ui, f"{item}{side}SpinBox").value
                if v:  # 0 shows "–": not rated yet
                    likert[item][side] = int(v)
        return {"original": original, "likert": likert}

    def onPairChanged(self):
        if self._updating or self.logic.design != "pair":
            return
        draft = self._pairDraft()
        if self.logic.isAnswerComplete(draft):
            self._save(draft)
        else:
            self.ui.statusLabel.text = _("Choose the original side and rate every item on both sides to save.")
            self.updateGUI()

    def onProtocolChanged(self):
        if self._updating or self.logic.design != "protocol":
            return
        values = {key: combo.itemData(combo.currentIndex) for key, combo in (("kernel", self.ui.kernelComboBox),
                                                             ("dose", self.ui.doseComboBox),
                                                             ("thickness", self.ui.thicknessComboBox))}
        draft = {"protocol": {k: v for k, v in values.items() if v is not None}}
        if self.logic.isAnswerComplete(draft):
            self._save(draft)
        else:
            self.ui.statusLabel.text = _("Choose kernel, dose and thickness to save.")

    # -- navigation ---------------------------------------------------------------------------------
    def onNext(self):
        if not self.logic.canGoNext():
            return
        with slicer.util.tryWithErrorDisplay(_("Could not load the next item."), waitCursor=True):
            self.logic.next()
            self.ui.statusLabel.text = ""
        self.updateGUI()

    def onPrevious(self):
        if not self.logic.canGoPrevious():
            return
        with slicer.util.tryWithErrorDisplay(_("Could not load the previous item."), waitCursor=True):
            self.logic.previous()
            self.ui.statusLabel.text = ""
        self.updateGUI()

    # -- view ---------------------------------------------------------------------------------------
    def updateGUI(self):
        session = self.logic.session if self.logic else None
        self.ui.readingCollapsibleButton.enabled = session is not None
        self.ui.closeButton.enabled = session is not None
        self.ui.openButton.enabled = session is None
        design = session.design if session else None
        self.ui.scoreGroupBox.visible = design == "single"
        self.ui.pairGroupBox.visible = design == "pair"
        self.ui.protocolGroupBox.visible = design == "protocol"
        self.ui.previousButton.enabled = self.logic.canGoPrevious() if session else False
        self.ui.nextButton.enabled = self.logic.canGoNext() if session else False
        if not session:
            self.ui.progressLabel.text = _("No study open.")
            self.ui.promptLabel.text = ""
            return
        self.ui.progressLabel.text = self.logic.progressText()
        questions = session.study.get("questions") or {}
        prompt = (questions.get("score") or questions.get("original") or questions.get("protocol") or {}).get("prompt", "")
        self.ui.promptLabel.text = prompt
        answer = self.logic.currentAnswer() or {}
        self._updating = True
        try:
            for k in range(6):
                getattr(self.ui, f"score{k}Button").checked = answer.get("score") == k
            # A half-filled pair form stays while the reader works on the same item.
            if design == "pair" and (answer or not self._pairDraftBelongsToItem()):
                self.ui.originalAButton.checked = answer.get("original") == "A"
                self.ui.originalBButton.checked = answer.get("original") == "B"
                for item in LIKERT_ITEMS:
                    for side in "AB":
                        saved = ((answer.get("likert") or {}).get(item) or {}).get(side)
                        getattr(self.ui, f"{item}{side}SpinBox").value = saved or 0
            if design == "protocol":
                guess = answer.get("guess") or {}
                for combo, key in ((self.ui.kernelComboBox, "kernel"), (self.ui.doseComboBox, "dose"),
                                   (self.ui.thicknessComboBox, "thickness")):
                    index = combo.findData(guess[key]) if key in guess else 0
                    combo.currentIndex = max(index, 0)
        finally:
            self._updating = False
        self._shownItem = session.index
        if session.complete and session.index == session.n - 1 and answer:
            self.ui.statusLabel.text = _("All items answered. Thank you! You can still go back to revise.")

    def _pairDraftBelongsToItem(self):
        return getattr(self, "_shownItem", None) == self.logic.session.index


def _ensurePackages():
    """The engine packages the study model needs (pyyaml for protocol studies), installed after asking."""
    try:
        from CTNormalizeSlicerLib import dependencies
    except ImportError:  # the CTNormalize module is not next to this one
        return
    dependencies.ensure([dependencies.ENGINE_REQUIREMENTS], requester="CTNormalize Reader Study")


class CTNormalizeReaderStudyLogic(ScriptedLoadableModuleLogic, ReaderStudyLogic):
    """Reading a blinded study; all behaviour is in :class:`ReaderStudyLogic` (usable without a GUI)."""

    def __init__(self, scene=None, appLogic=None):
        ScriptedLoadableModuleLogic.__init__(self)
        ReaderStudyLogic.__init__(self, scene, appLogic)


class CTNormalizeReaderStudyTest(ScriptedLoadableModuleTest):
    """Self-test inside Slicer: make a tiny study, read two items, check the answer file."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_read_and_record()

    def test_read_and_record(self):
        import csv
        import json
        import tempfile

        import numpy as np
        import SimpleITK as sitk

        from CTNormalizeLib.readerstudy import create_study

        self.delayDisplay("Making a tiny study")
        root = tempfile.mkdtemp(prefix="CTNormalizeReaderStudyTest-")
        rows = []
        for i in range(4):
            row = {"case": f"c{i}"}
            for variant in ("original", "normalized"):
                arr = np.full((8, 32, 32), -1000, np.int16)
                arr[:, 8:24, 8:24] = 40
                path = os.path.join(root, f"{variant}{i}.nrrd")
                sitk.WriteImage(sitk.GetImageFromArray(arr), path)
                row[variant] = path
            rows.append(row)
        manifest = os.path.join(root, "manifest.csv")
        with open(manifest, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        studyDir = os.path.join(root, "study")
        create_study(manifest, studyDir, "single", 1)

        logic = CTNormalizeReaderStudyLogic()
        logic.openStudy(studyDir, "self test")
        node = logic.nodes["A"]
        self.assertTrue(node.GetName().startswith("Case "))
        self.assertFalse(logic.canGoNext())
        line = logic.recordAnswer({"score": 4})
        self.assertTrue(logic.canGoNext())
        logic.next()
        self.assertIsNone(node.GetScene())
        with open(logic.session.path) as f:
            self.assertEqual(json.loads(f.readline())["item"], line["item"])
        logic.closeStudy()
        self.delayDisplay("Test passed")
