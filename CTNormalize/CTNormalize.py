"""CTNormalize: normalize CT scans across acquisition protocols (kernel, dose, slice thickness).

The panel is binding only; the behaviour lives in ``CTNormalizeLogic`` (``CTNormalizeSlicerLib``)
and the engine (``CTNormalizeLib``, run in a child process with Slicer's Python).

Slicer API check: every ``slicer.*``, ``qt.*``, ``ctk.*`` and ``qMRML*`` name used by this file
and by ``CTNormalizeSlicerLib`` was looked up in the Slicer/Slicer source at tag v5.10.0
(a2b6d082be) and on main at 583e9b37d5 (2026-08-21), and in commontk/CTK main 868d56c72d
for the CMake macro. Names only on 5.12+ (``slicer.packaging``) are used behind a fallback.
Checked: ScriptedLoadableModule/Widget/Logic/Test, slicer.i18n.tr/translate,
parameterNodeWrapper + WithinRange + QComboBoxToEnumConnector (Enum ``label``),
slicer.util.{loadUI, childWidgetVariables, tryWithErrorDisplay, launchConsoleProcess(args,
updateEnvironment, cwd), arrayFromVolume, arrayFromVolumeModified, confirmOkCancelDisplay,
pip_install, errorDisplay, VTKObservationMixin}, slicer.packaging.pip_ensure (5.12+),
vtkMRMLVolumeArchetypeStorageNode.{SetFileName, SetUseCompression, SetSingleFile, WriteData,
ReadData}, vtkMRMLSubjectHierarchyNode.{GetSubjectHierarchyNode, GetItemByDataNode,
GetItemParent, SetItemParent, CreateItem}, vtkMRMLSliceLogic.GetSliceCompositeNode(sliceNode),
vtkMRMLSliceCompositeNode.{SetBackgroundVolumeID, SetForegroundVolumeID, SetLabelVolumeID,
SetLinkedControl, SetHotLinkedControl}, vtkMRMLSliceNode.SetOrientation,
vtkMRMLLayoutNode.{SetViewArrangement, AddLayoutDescription, IsLayoutDescription,
SlicerLayoutSideBySideView=29}, vtkMRMLApplicationLogic.FitSliceToBackground(bool, bool),
vtkMRMLScalarVolumeDisplayNode.{AutoWindowLevelOff, SetWindowLevel},
vtkSlicerSegmentationsModuleLogic.{ExportSegmentsToLabelmapNode(seg, vtkStringArray, labelmap,
reference), ImportLabelmapToSegmentationNode(labelmap, seg, vtkStringArray)},
vtkMRMLTableNode.{RemoveAllColumns, SetColumnDescription, SetColumnUnitLabel},
qMRMLNodeComboBox, qMRMLSegmentSelectorWidget.{currentNode, selectedSegmentIDs,
currentSegmentID, multiSelection}, ctkCollapsibleButton, qt.QTimer.singleShot,
slicer.app.{temporaryPath, applicationLogic}, slicer.dicomDatabase.{fileForInstance, fileValue},
SampleData.downloadSample("CTChest"), PyTorchUtils.PyTorchUtilsLogic().installTorch
(SlicerPyTorch, askConfirmation/torchVersionRequirement).
Also checked outside Slicer: this file imports and its parameter node (enums with ``label``,
WithinRange floats, node references) works with Slicer v5.10.0's own ScriptedLoadableModule.py
and parameterNodeWrapper sources on the slicer-core MRML classes (Qt stubbed); the .ui compiles
with uic. Not checked without a running Slicer: the widgets' look and signals, QComboBox
``view().setRowHidden`` through PythonQt, the self-test.
"""

from __future__ import annotations

import enum
import logging
import os
from typing import Annotated, Optional

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

import CTNormalizeSlicerLib
from CTNormalizeSlicerLib.logic import NormalizationLogic
from CTNormalizeSlicerLib.process import QtPoller, RunState, format_eta

CTNormalizeSlicerLib.ensure_engine_importable()

#
# CTNormalize
#


class CTNormalize(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("CT Normalize")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["CTNormalize contributors"]
        self.parent.helpText = _("""
Translate a CT into how it would look under a target protocol (reconstruction kernel, dose,
slice thickness), then compare both volumes side by side and measure radiomics or the
emphysema index on both. The work runs in the background; Slicer stays usable and the run can
be cancelled. Research use only, not for diagnosis.
See <a href="https://github.com/ctnormalize/CTNormalize#install-in-3d-slicer">the documentation</a>.
""")
        self.parent.acknowledgementText = _("""
Uses SimpleITK, pyradiomics, scipy, scikit-image and, for learned models, PyTorch and MONAI.
""")
        icon = CTNormalizeSlicerLib.resources_dir() / "Icons" / "CTNormalize.png"
        if icon.is_file():  # also when used from the source tree, where Resources/ is one level up
            self.parent.icon = qt.QIcon(str(icon))


#
# Parameters
#


class KernelChoice(enum.Enum):
    DETECTED = "detected"
    SMOOTH = "smooth"
    STANDARD = "standard"
    SHARP = "sharp"
    VERY_SHARP = "very-sharp"

    def label(self):
        return _("Detected") if self is KernelChoice.DETECTED else self.value


class DeviceChoice(enum.Enum):
    AUTO = "auto"
    GPU = "cuda"
    CPU = "cpu"

    def label(self):
        return {"auto": _("Auto"), "cuda": _("GPU"), "cpu": _("CPU")}[self.value]


class CompareView(enum.Enum):
    AXIAL = "Axial"
    CORONAL = "Coronal"
    SAGITTAL = "Sagittal"
    GRID = "grid"

    def label(self):
        return {"Axial": _("Axial"), "Coronal": _("Coronal"), "Sagittal": _("Sagittal"),
                "grid": _("2x3: all three, both volumes")}[self.value]


@parameterNodeWrapper
class CTNormalizeParameterNode:
    """Choices of the panel, saved with the scene.

    sourceKernel/sourceKernelName/sourceDose/sourceThickness override detection (empty or 0 =
    detected). targetPreset is a preset name or "custom" (then targetSpec). method is "auto", a
    model name or a classical method.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    sourceKernel: KernelChoice = KernelChoice.DETECTED
    sourceKernelName: str = ""
    sourceDose: Annotated[float, WithinRange(0.0, 4.0)] = 0.0
    sourceThickness: Annotated[float, WithinRange(0.0, 20.0)] = 0.0
    targetPreset: str = "emphysema-reference"
    targetSpec: str = ""
    method: str = "auto"
    device: DeviceChoice = DeviceChoice.AUTO
    compareOriginal: vtkMRMLScalarVolumeNode
    compareNormalized: vtkMRMLScalarVolumeNode
    compareView: CompareView = CompareView.AXIAL
    emphysemaThreshold: Annotated[float, WithinRange(-1100.0, -800.0)] = -950.0


#
# CTNormalizeWidget
#


class CTNormalizeWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: binding between the .ui widgets and CTNormalizeLogic."""

    CUSTOM = "custom"

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None
        self._quantRun = None
        self._pollers = []
        self._gpuAvailable = False

    def resourcePath(self, filename):
        """Resources next to the module when installed, or at the top of the source tree."""
        return str(CTNormalizeSlicerLib.resources_dir() / filename)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CTNormalize.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = CTNormalizeLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self._fillChoices()
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.detectButton.connect("clicked(bool)", self.onDetectButton)
        self.ui.targetComboBox.connect("currentIndexChanged(int)", self.onTargetChanged)
        self.ui.methodComboBox.connect("currentIndexChanged(int)", self.onMethodChanged)
        self.ui.compareButton.connect("clicked(bool)", self.onCompareButton)
        self.ui.lungWindowButton.connect("clicked(bool)", lambda: self.onWindowPreset("lung"))
        self.ui.mediastinumWindowButton.connect("clicked(bool)", lambda: self.onWindowPreset("mediastinum"))
        self.ui.boneWindowButton.connect("clicked(bool)", lambda: self.onWindowPreset("bone"))
        self.ui.fitButton.connect("clicked(bool)", self.onFitButton)
        self.ui.radiomicsButton.connect("clicked(bool)", self.onRadiomicsButton)
        self.ui.emphysemaButton.connect("clicked(bool)", self.onEmphysemaButton)
        self.initializeParameterNode()
        self._startGpuCheck()

    def cleanup(self) -> None:
        for run in (self._run, self._quantRun):
            if run is not None and run.state.running:
                run.cancel()
        for poller in self._pollers:
            poller.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode: Optional[CTNormalizeParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateButtons)
            self._selectCombo(self.ui.targetComboBox, self._parameterNode.targetPreset)
            self._selectCombo(self.ui.methodComboBox, self._parameterNode.method)
            self.onTargetChanged(self.ui.targetComboBox.currentIndex)
            self._updateButtons()

    # -- choices -----------------------------------------------------------------------
    def _fillChoices(self) -> bool:
        """Fill the target, method and kernel choices; False while engine packages are missing."""
        try:
            self._fillChoicesFromEngine()
        except ImportError as exc:
            self.ui.statusLabel.text = _("Some Python packages the engine needs are missing ({name}). "
                                         "Press Apply to install them.").format(name=getattr(exc, "name", exc))
            return False
        return True

    def _fillChoicesFromEngine(self) -> None:
        combo = self.ui.targetComboBox
        combo.clear()
        for name, (description, spec) in self.logic.presets().items():
            combo.addItem(f"{name}  ({spec})", name)
            combo.setItemData(combo.count - 1, description, qt.Qt.ToolTipRole)
        combo.addItem(_("Custom..."), self.CUSTOM)
        combo = self.ui.methodComboBox
        combo.clear()
        for name, tooltip in self.logic.methods():
            combo.addItem(_("Auto") if name == "auto" else name, name)
            combo.setItemData(combo.count - 1, tooltip, qt.Qt.ToolTipRole)
        completer = qt.QCompleter(self.logic.kernelChoices(), self.ui.sourceKernelNameLineEdit)
        completer.setCaseSensitivity(qt.Qt.CaseInsensitive)
        self.ui.sourceKernelNameLineEdit.setCompleter(completer)

    @staticmethod
    def _selectCombo(combo, data) -> None:
        index = combo.findData(data)
        if index >= 0:
            combo.currentIndex = index

    def onTargetChanged(self, index) -> None:
        name = self.ui.targetComboBox.itemData(index)
        if self._parameterNode and name:
            self._parameterNode.targetPreset = name
        self.ui.targetSpecLineEdit.enabled = name == self.CUSTOM

    def onMethodChanged(self, index) -> None:
        name = self.ui.methodComboBox.itemData(index)
        if self._parameterNode and name:
            self._parameterNode.method = name
        self.ui.methodComboBox.toolTip = self.ui.methodComboBox.itemData(index, qt.Qt.ToolTipRole) or ""

    def _startGpuCheck(self) -> None:
        def done(available):
            self._gpuAvailable = bool(available)
            self._updateButtons()

        run = self.logic.startGpuCheck(done)
        if run is not None:
            self._pollers.append(QtPoller(run, 300).start())

    def _updateButtons(self, caller=None, event=None) -> None:
        p = self._parameterNode
        running = self._run is not None and self._run.state.running
        if running:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the running normalization")
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.text = _("Apply")
            ok = bool(p and p.inputVolume)
            self.ui.applyButton.enabled = ok
            self.ui.applyButton.toolTip = (_("Normalize the input volume") if ok
                                           else _("Select an input volume"))
        gpuIndex = self.ui.deviceComboBox.findText(_("GPU"))
        if gpuIndex >= 0:  # GPU is offered only when torch sees one
            self.ui.deviceComboBox.view().setRowHidden(gpuIndex, not self._gpuAvailable)
        if p and not self._gpuAvailable and p.device is DeviceChoice.GPU:
            p.device = DeviceChoice.AUTO
        self.ui.compareButton.enabled = bool(p and p.compareOriginal and p.compareNormalized)
        quantBusy = self._quantRun is not None and self._quantRun.state.running
        self.ui.radiomicsButton.enabled = self.ui.compareButton.enabled and not quantBusy
        self.ui.emphysemaButton.enabled = self.ui.compareButton.enabled and not quantBusy

    # -- source protocol ---------------------------------------------------------------
    def onDetectButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not detect the source protocol."), waitCursor=True):
            protocol = self.logic.detectSourceProtocol(self._parameterNode.inputVolume)
            rows = self.logic.protocolRows(protocol)
            table = self.ui.sourceTableWidget
            table.setRowCount(len(rows))
            for r, row in enumerate(rows):
                for c, text in enumerate(row):
                    table.setItem(r, c, qt.QTableWidgetItem(text))
            table.resizeColumnsToContents()

    def _sourceSpec(self) -> str:
        p = self._parameterNode
        kernel = p.sourceKernelName.strip() or ("" if p.sourceKernel is KernelChoice.DETECTED else p.sourceKernel.value)
        return self.logic.sourceSpec(kernel, p.sourceDose, p.sourceThickness)

    def _target(self) -> str:
        p = self._parameterNode
        if p.targetPreset == self.CUSTOM:
            return p.targetSpec.strip()
        return p.targetPreset

    # -- normalization -----------------------------------------------------------------
    def onApplyButton(self) -> None:
        if self._run is not None and self._run.state.running:
            self._log(_("Cancelling..."))
            self.logic.cancel(self._run)
            self._updateButtons()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the normalization."), waitCursor=True):
            p = self._parameterNode
            if self.ui.targetComboBox.count == 0:  # first use without the engine's packages
                self.logic.ensureDependencies(models=False)
                if self._fillChoices():
                    self._selectCombo(self.ui.targetComboBox, p.targetPreset)
                    self.ui.statusLabel.text = _("Packages installed. Check the choices and press Apply.")
                return
            self.logic.ensureDependencies(models=self.logic.methodNeedsTorch(p.method) or p.device is DeviceChoice.GPU)
            self.ui.logTextEdit.clear()
            self.ui.progressBar.value = 0
            self._run = self.logic.startNormalization(
                p.inputVolume, self._target(), source=self._sourceSpec(), method=p.method,
                device=p.device.value, outputNode=p.outputVolume, onEvent=self._onEvent, onFinished=self._onFinished)
            self._log(" ".join(self._run.args))
            self._pollers.append(QtPoller(self._run, 200).start())
            self._updateButtons()

    def _onEvent(self, run, event) -> None:
        kind = event.get("event")
        if kind == "progress":
            self.ui.progressBar.value = int(round(100 * run.fraction))
            eta = format_eta(run.eta_s)
            self.ui.statusLabel.text = _("{stage}: {pct}%").format(stage=run.stage, pct=int(100 * run.fraction)) + (
                "  " + _("about {eta} left").format(eta=eta) if eta else "")
        elif kind == "started":
            self.ui.statusLabel.text = _("Started: {method} on {device}").format(
                method=event.get("method", ""), device=event.get("device", ""))
            self._log(self.ui.statusLabel.text)
        elif kind == "warning":
            self._log(_("Warning: {message}").format(message=event.get("message", "")))
        elif kind == "log":
            self._log(event.get("line", ""))
        elif kind == "import":
            self.ui.statusLabel.text = _("Loading the result...")

    def _onFinished(self, run) -> None:
        if run.state is RunState.COMPLETED:
            self.ui.progressBar.value = 100
            self.ui.statusLabel.text = _("Done in {s:.0f} s: {name}").format(s=run.elapsed_s, name=run.outputNode.GetName())
            qc = (getattr(run, "report", {}) or {}).get("qc", {})
            if qc:
                self._log(_("QC: {qc}").format(qc=qc))
            for w in run.warnings:
                self._log(_("Warning: {message}").format(message=w["message"]))
            p = self._parameterNode
            p.compareOriginal = run.inputNode
            p.compareNormalized = run.outputNode
            self.onCompareButton()
        elif run.state is RunState.CANCELLED:
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Cancelled.")
        else:
            self.ui.statusLabel.text = _("Failed.")
            self._log(f"[{run.error_code}] {run.error_message}")
            slicer.util.errorDisplay(run.error_message or _("The normalization failed."),
                                     windowTitle=_("CT Normalize"))
        self._updateButtons()

    def _log(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)

    # -- views -------------------------------------------------------------------------
    def onCompareButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not set up the comparison."), waitCursor=True):
            p = self._parameterNode
            if p.compareView is CompareView.GRID:
                self.logic.compare(p.compareOriginal, p.compareNormalized, layout="grid")
            else:
                self.logic.compare(p.compareOriginal, p.compareNormalized, layout="sideBySide",
                                   orientation=p.compareView.value)

    def onWindowPreset(self, preset: str) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Could not set the window.")):
            self.logic.setWindowPreset([p.compareOriginal, p.compareNormalized], preset)

    def onFitButton(self) -> None:
        from CTNormalizeSlicerLib import views

        views.fit_slices(self.logic.appLogic)

    # -- segments ----------------------------------------------------------------------
    def onRadiomicsButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start radiomics."), waitCursor=True):
            self.logic.ensureDependencies(radiomics=True)
            p = self._parameterNode
            seg = self.ui.radiomicsSegmentSelector.currentNode()
            ids = list(self.ui.radiomicsSegmentSelector.selectedSegmentIDs())
            self._quantRun = self.logic.startRadiomics(
                p.compareOriginal, p.compareNormalized, seg, ids or None,
                onEvent=self._onEvent, onFinished=self._onQuantFinished)
            self.ui.statusLabel.text = _("Radiomics running on both volumes...")
            self._pollers.append(QtPoller(self._quantRun, 300).start())
            self._updateButtons()

    def onEmphysemaButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to start the emphysema measurement."), waitCursor=True):
            p = self._parameterNode
            seg = self.ui.lungSegmentSelector.currentNode()
            lung = self.ui.lungSegmentSelector.currentSegmentID() if seg else ""
            name = seg.GetSegmentation().GetSegment(lung).GetName() if seg and lung else ""
            self._quantRun = self.logic.startEmphysema(
                p.compareOriginal, p.compareNormalized, seg, name, threshold=p.emphysemaThreshold,
                onEvent=self._onEvent, onFinished=self._onQuantFinished)
            self.ui.statusLabel.text = _("Emphysema index running on both volumes...")
            self._pollers.append(QtPoller(self._quantRun, 300).start())
            self._updateButtons()

    def _onQuantFinished(self, run) -> None:
        if run.state is RunState.COMPLETED:
            self.ui.statusLabel.text = _("Results in table {name}").format(name=run.tableNode.GetName())
            self.logic.showTable(run.tableNode)
        elif run.state is RunState.FAILED:
            self.ui.statusLabel.text = _("Failed.")
            self._log(f"[{run.error_code}] {run.error_message}")
            slicer.util.errorDisplay(run.error_message or _("The measurement failed."), windowTitle=_("CT Normalize"))
        self._updateButtons()


#
# CTNormalizeLogic
#


class CTNormalizeLogic(ScriptedLoadableModuleLogic, NormalizationLogic):
    """Usable without the GUI: ``CTNormalizeLogic().runNormalization(volume, "emphysema-reference")``.

    All behaviour is in :class:`CTNormalizeSlicerLib.logic.NormalizationLogic` (tested headless).
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        NormalizationLogic.__init__(self)

    def getParameterNode(self):
        return CTNormalizeParameterNode(super().getParameterNode())

    @staticmethod
    def ensureDependencies(models: bool = False, radiomics: bool = False) -> None:
        """Install what is missing, after asking (torch through the PyTorch extension)."""
        from CTNormalizeSlicerLib import dependencies

        sets = [dependencies.ENGINE_REQUIREMENTS]
        if models:
            dependencies.ensure_torch(ask=True)
            sets.append(dependencies.MODEL_REQUIREMENTS)
        if radiomics:
            sets.append(dependencies.RADIOMICS_REQUIREMENTS)
        dependencies.ensure(sets, requester="CTNormalize")

    @staticmethod
    def showTable(tableNode) -> None:
        """Show a table in the layout's table view (keeping the slice views)."""
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:
            return
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(tableNode.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()


#
# CTNormalizeTest
#


class CTNormalizeTest(ScriptedLoadableModuleTest):
    """Self-test: the same flow as the panel, on SampleData CTChest."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_CTNormalize_CTChest()

    def _wait(self, run, timeout=900):
        import time

        t0 = time.monotonic()
        while not (run.poll().finished or run.state is RunState.IMPORT_RESULTS):
            slicer.app.processEvents()
            time.sleep(0.05)
            self.assertLess(time.monotonic() - t0, timeout, "the engine took too long")
        return run.state

    def test_CTNormalize_CTChest(self):
        import numpy as np
        import SampleData

        from CTNormalizeSlicerLib import nodes, tables

        self.delayDisplay("Loading CTChest")
        volume = SampleData.downloadSample("CTChest")
        before = slicer.util.arrayFromVolume(volume).copy()
        logic = CTNormalizeLogic()

        self.delayDisplay("Normalizing in the background")
        run = logic.startNormalization(volume, "emphysema-reference",
                                       source="kernel=standard,dose=1,thickness=2.5", device="cpu")
        self.assertEqual(self._wait(run), RunState.COMPLETED, run.error_message)
        out = run.outputNode
        self.assertEqual(out.GetName(), f"{volume.GetName()} \u2192 emphysema-reference")
        self.assertIn("protocolPair", nodes.provenance(out))
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), before)

        self.delayDisplay("Compare views")
        logic.compare(volume, out, layout="sideBySide")
        red = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceCompositeNode()
        yellow = slicer.app.layoutManager().sliceWidget("Yellow").mrmlSliceCompositeNode()
        self.assertEqual(red.GetBackgroundVolumeID(), volume.GetID())
        self.assertEqual(yellow.GetBackgroundVolumeID(), out.GetID())
        self.assertTrue(red.GetLinkedControl() and yellow.GetHotLinkedControl())
        self.assertAlmostEqual(out.GetDisplayNode().GetWindow(), 1500)
        logic.compare(volume, out, layout="grid")

        self.delayDisplay("Segments: radiomics and emphysema")
        seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "test segments")
        seg.CreateDefaultDisplayNodes()
        seg.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        box = np.zeros(before.shape, np.uint8)
        z, y, x = (s // 2 for s in before.shape)
        box[z - 5:z + 5, y - 15:y + 15, x - 15:x + 15] = 1
        sid = seg.GetSegmentation().AddEmptySegment("", "box")
        slicer.util.updateSegmentBinaryLabelmapFromArray(box, seg, sid, volume)
        rad = logic.startRadiomics(volume, out, seg, ["box"])
        self.assertEqual(self._wait(rad), RunState.COMPLETED, rad.error_message)
        self.assertEqual(tables.column_names(rad.tableNode)[:5],
                         ["segment", "feature", "original", "normalized", "% difference"])
        emph = logic.startEmphysema(volume, out)
        self.assertEqual(self._wait(emph), RunState.COMPLETED, emph.error_message)
        self.assertEqual(tables.column_names(emph.tableNode),
                         ["region", "measure", "unit", "original", "normalized", "difference"])
        self.delayDisplay("Test passed")
