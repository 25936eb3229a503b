"""CT Normalize: translate a CT into how it would look under a target acquisition protocol.

This file holds the classes Slicer looks for: the module description, the panel (a thin
binding composed of the ``CTNormalizeSlicerLib.panel_*`` parts), the logic (all behaviour,
usable without the GUI, tested headless on slicer-core) and the self-test.
"""

from __future__ import annotations

import os
from typing import Optional

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

import CTNormalizeSlicerLib

CTNormalizeSlicerLib.ensure_engine_importable()

from CTNormalizeSlicerLib import settings  # noqa: E402
from CTNormalizeSlicerLib.logic import NormalizationLogic  # noqa: E402
from CTNormalizeSlicerLib.panel_compare import ComparePanel  # noqa: E402
from CTNormalizeSlicerLib.panel_normalize import NormalizePanel  # noqa: E402
from CTNormalizeSlicerLib.panel_results import ResultsPanel  # noqa: E402
from CTNormalizeSlicerLib.parameters import CTNormalizeParameterNode, DeviceChoice  # noqa: E402


class CTNormalize(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("CT Normalize")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["CTNormalize contributors"]
        # a literal inside _(): the translation extractor reads the call, not a variable
        self.parent.helpText = _(
            '<p>Translates a CT into how it would look under a target protocol (reconstruction kernel, dose,\n'
            'slice thickness), shows both side by side, and measures radiomics and the emphysema index on\n'
            'both. The work runs in the background: Slicer stays usable and every run can be cancelled.</p>\n'
            '<p><b>Research use only, not for diagnosis.</b> Results depend on the method; read the model\n'
            'cards (Settings and models) and the run report before using numbers in a study.</p>\n'
            '<p>Try it: <i>Sample Data → CTNormalize</i> has a simulated sharp-kernel low-dose chest CT (made on\n'
            'this computer) and CTChest. Select it as input and press Apply on the defaults.</p>\n'
            "<p>How to cite: cite the CTNormalize software with its version (shown in every result's\n"
            '<tt>CTNormalize.engineVersion</tt>) and the method or model with its sha256.</p>\n'
            '<p><a href="https://github.com/ctnormalize/CTNormalize/blob/main/docs/slicer.md">Documentation</a> ·\n'
            '<a href="https://github.com/ctnormalize/CTNormalize#install-in-3d-slicer">Installation</a> ·\n'
            '<a href="https://github.com/ctnormalize/CTNormalize/issues">Questions and bugs</a></p>')
        self.parent.acknowledgementText = _(
            "Uses SimpleITK, pyradiomics, scipy, scikit-image and, for learned models, PyTorch and MONAI. "
            "Licensed under the Apache License 2.0.")
        icon = CTNormalizeSlicerLib.resources_dir() / "Icons" / "CTNormalize.png"
        if icon.is_file():  # also from the source tree, where Resources/ is one level up
            self.parent.icon = qt.QIcon(str(icon))
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Sample Data → CTNormalize: the simulated chest (made locally) and CTChest."""
    from CTNormalizeSlicerLib import sampledata

    sampledata.register(str(CTNormalizeSlicerLib.resources_dir() / "Icons"))


class CTNormalizeWidget(ScriptedLoadableModuleWidget, VTKObservationMixin, NormalizePanel, ComparePanel, ResultsPanel):
    """The panel: the .ui widgets bound to the parameter node and to CTNormalizeLogic."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None
        self._quantRun = None
        self._quantLabel = ""
        self._lastTable = None
        self._pollers = []
        self._accelerators = {}

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
        # quitting Slicer mid-run must not leave the engine running or patient data in the temp folder
        slicer.app.connect("aboutToQuit()", self.onAboutToQuit)
        self.connectNormalize()
        self.connectCompare()
        self.connectResults()
        self.fillChoices()
        self.initializeParameterNode()
        self.startGpuCheck()

    def cleanup(self) -> None:
        """Module reload or application exit: stop every run now (temp folders removed)."""
        slicer.app.disconnect("aboutToQuit()", self.onAboutToQuit)  # a reloaded widget is not kept alive by it
        if self.logic is not None:
            self.logic.shutdown(_("Cancelled: the module was reloaded."))
            self.logic.stopWindowLevelSync()
        for poller in self._pollers:
            poller.stop()
        self._pollers = []
        self.removeObservers()

    def onAboutToQuit(self) -> None:
        if self.logic is not None:
            self.logic.shutdown(_("Cancelled: Slicer was closed."))

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)  # the logic itself stops the runs of the closing scene

    def onSceneEndClose(self, caller, event) -> None:
        self._lastTable = None
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        # the saved device is read before the GUI is bound: binding rebuilds the device combo, whose
        # index changes are saved as the user's choice
        saved = settings.get("device")
        node = self.logic.getParameterNode()
        if saved in [c.value for c in DeviceChoice] and node.device is DeviceChoice.AUTO:
            node.device = DeviceChoice(saved)
        self.setParameterNode(node)
        p = self._parameterNode
        if not p.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                p.inputVolume = first

    def setParameterNode(self, inputParameterNode: Optional[CTNormalizeParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            self.selectSavedChoices()
            self.updateButtons()

    def updateButtons(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if self._run is not None and self._run.state.running:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the running normalization")
            self.ui.applyButton.enabled = True
        else:
            ok = bool(p and p.inputVolume)
            self.ui.applyButton.text = _("Apply")
            self.ui.applyButton.enabled = ok
            self.ui.applyButton.toolTip = _("Normalize the input volume") if ok else _("Select an input volume")
        self.updateDeviceChoices()
        self.updateCompareButtons()
        self.updateResultsButtons()

    def _log(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)


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
        dependencies.ensure(sets, requester="CTNormalize")
        if radiomics:
            dependencies.ensure_radiomics(requester="CTNormalize")


class CTNormalizeTest(ScriptedLoadableModuleTest):
    """Self-test: the panel's flow on the simulated sample (no network), see ``CTNormalizeSlicerLib.selftest``."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        from CTNormalizeSlicerLib import selftest

        self.setUp()
        selftest.run(self, CTNormalizeLogic(), os.path.join(slicer.app.temporaryPath, "CTNormalizeSelfTest"))
