"""The panel's normalization part: choices, Detect, Apply/Cancel with progress, device and models.

A mixin of ``CTNormalizeWidget`` (Qt lives here, behaviour in the logic). Errors reach the
user in the panel's words (:func:`.messages.panel_message`).
"""

from __future__ import annotations

import qt
import slicer
from slicer.i18n import tr as _

from . import settings
from .choices import CUSTOM, LIKE
from .messages import panel_message
from .parameters import DeviceChoice, KernelChoice
from .process import QtPoller, RunState, format_eta


class NormalizePanel:
    """Needs ``self.ui``, ``self.logic``, ``self._parameterNode``, ``self._pollers``, ``self._log``."""

    def connectNormalize(self) -> None:
        self.ui.applyButton.clicked.connect(self.onApplyButton)
        self.ui.detectButton.clicked.connect(self.onDetectButton)
        self.ui.targetComboBox.currentIndexChanged.connect(self.onTargetChanged)
        self.ui.methodComboBox.currentIndexChanged.connect(self.onMethodChanged)
        self.ui.deviceComboBox.currentIndexChanged.connect(self.onDeviceChanged)
        self.ui.modelsDirectoryButton.clicked.connect(self.onModelsDirectoryButton)
        self.ui.modelsDirectoryLineEdit.editingFinished.connect(self.onModelsDirectoryChanged)
        self.ui.modelsDirectoryLineEdit.text = settings.get("modelsDirectory")
        settings.apply_models_directory(settings.get("modelsDirectory"))

    # -- choices -----------------------------------------------------------------------
    def fillChoices(self) -> bool:
        """Fill the target, method and kernel choices; False while engine packages are missing."""
        try:
            self._fillChoicesFromEngine()
        except ImportError as exc:
            self.ui.statusLabel.text = _("Some Python packages the engine needs are missing ({name}). "
                                         "Press Apply to install them.").format(name=getattr(exc, "name", exc))
            return False
        return True

    def _fillChoicesFromEngine(self) -> None:
        # refilling must not reset the parameter node's choices (clearing a combo selects its first item)
        for combo in (self.ui.targetComboBox, self.ui.methodComboBox):
            combo.blockSignals(True)
        try:
            self._fillCombos()
        finally:
            for combo in (self.ui.targetComboBox, self.ui.methodComboBox):
                combo.blockSignals(False)
        p = self._parameterNode
        if p is not None:
            self.selectSavedChoices()
        self.fillModelsList()

    def selectSavedChoices(self) -> None:
        """Show the parameter node's target and method; a saved method no longer installed becomes Auto, and says so."""
        p = self._parameterNode
        if self.ui.methodComboBox.count == 0:  # the engine's packages are missing: nothing to choose among yet
            return
        if not self.selectCombo(self.ui.targetComboBox, p.targetPreset):
            self.ui.targetComboBox.currentIndex = 0
            self.onTargetChanged(0)
        if not self.selectCombo(self.ui.methodComboBox, p.method):
            self._log(_("The saved method {name} is not installed: Auto is used.").format(name=p.method))
            p.method = "auto"
            self.selectCombo(self.ui.methodComboBox, "auto")
        self.onTargetChanged(self.ui.targetComboBox.currentIndex)
        self.onMethodChanged(self.ui.methodComboBox.currentIndex)  # its tooltip (the refill ran without signals)

    def _fillCombos(self) -> None:
        combo = self.ui.targetComboBox
        combo.clear()
        for name, (description, spec) in self.logic.presets().items():
            combo.addItem(f"{name}  ({spec})", name)
            combo.setItemData(combo.count - 1, description, qt.Qt.ToolTipRole)
        combo.addItem(_("Custom..."), CUSTOM)
        combo.addItem(_("Like a reference scan..."), LIKE)
        combo.setItemData(combo.count - 1, _("The kernel, noise and thickness measured on another CT: "
                                             "use it when the target's protocol names do not describe its "
                                             "scanner (another vendor's 'standard')"), qt.Qt.ToolTipRole)
        combo = self.ui.methodComboBox
        combo.clear()
        for name, tooltip in self.logic.methods():
            combo.addItem(_("Auto") if name == "auto" else name, name)
            combo.setItemData(combo.count - 1, tooltip, qt.Qt.ToolTipRole)
        completer = qt.QCompleter(self.logic.kernelChoices(), self.ui.sourceKernelNameLineEdit)
        completer.caseSensitivity = qt.Qt.CaseInsensitive
        self.ui.sourceKernelNameLineEdit.setCompleter(completer)

    def fillModelsList(self) -> None:
        from .choices import model_tooltip

        lst = self.ui.modelsListWidget
        lst.clear()
        for package in self.logic.installedModels():
            item = qt.QListWidgetItem(str(getattr(package, "name", "?")))
            item.setToolTip(model_tooltip(package))
            lst.addItem(item)
        if lst.count == 0:
            lst.addItem(_("No learned models found; the classical methods are always available."))

    @staticmethod
    def selectCombo(combo, data) -> bool:
        """Select the item holding ``data``; False (nothing changed) when there is none."""
        index = combo.findData(data)
        if index >= 0:
            combo.currentIndex = index
        return index >= 0

    def onTargetChanged(self, index) -> None:
        name = self.ui.targetComboBox.itemData(index)
        if self._parameterNode and name:
            self._parameterNode.targetPreset = name
        self.ui.targetSpecLineEdit.enabled = name == CUSTOM
        self.ui.targetLikeSelector.enabled = name == LIKE

    def onMethodChanged(self, index) -> None:
        name = self.ui.methodComboBox.itemData(index)
        if self._parameterNode and name:
            self._parameterNode.method = name
        self.ui.methodComboBox.toolTip = self.ui.methodComboBox.itemData(index, qt.Qt.ToolTipRole) or ""

    def onDeviceChanged(self, index) -> None:
        # this runs before the parameter node's own binding has read the combo: the choice is the index's
        # (the binding lists the enum's members in order)
        choices = list(DeviceChoice)
        if self._parameterNode is not None and 0 <= index < len(choices):
            settings.set("device", choices[index].value)

    def onModelsDirectoryButton(self) -> None:
        path = qt.QFileDialog.getExistingDirectory(None, _("Folder of your own models"),
                                                   self.ui.modelsDirectoryLineEdit.text)
        if path:
            self.ui.modelsDirectoryLineEdit.text = path
            self.onModelsDirectoryChanged()

    def onModelsDirectoryChanged(self) -> None:
        self.logic.setModelsDirectory(self.ui.modelsDirectoryLineEdit.text.strip())
        self.fillChoices()

    def startGpuCheck(self) -> None:
        from .dependencies import torch_installed

        def done(found):
            self._accelerators = dict(found, checked=True, torch=torch_installed())
            self.updateButtons()

        run = self.logic.startGpuCheck(done)
        if run is not None:
            self._pollers.append(QtPoller(run, 300).start())

    def updateDeviceChoices(self) -> None:
        """Offer GPU/MPS only when torch sees them and the engine accepts them; keep the saved choice."""
        from .engine import supported_devices

        try:
            accepted = supported_devices()
        except ImportError:
            accepted = ("auto", "cpu")
        view = self.ui.deviceComboBox.view()
        for choice, key in ((DeviceChoice.GPU, "cuda"), (DeviceChoice.MPS, "mps")):
            index = self.ui.deviceComboBox.findText(choice.label())
            usable = bool(self._accelerators.get(key)) and choice.value in accepted
            if index >= 0:
                view.setRowHidden(index, not usable)
            p = self._parameterNode
            if p is not None and not usable and p.device is choice and self._accelerators.get("checked"):
                p.device = DeviceChoice.AUTO

    # -- source protocol ---------------------------------------------------------------
    def onDetectButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not detect the source protocol."), waitCursor=True):
            self.logic.ensureDependencies()
            protocol = self.logic.detectSourceProtocol(self._parameterNode.inputVolume)
            rows = self.logic.protocolRows(protocol)
            table = self.ui.sourceTableWidget
            table.rowCount = len(rows)
            for r, row in enumerate(rows):
                for c, text in enumerate(row):
                    table.setItem(r, c, qt.QTableWidgetItem(text))
            table.resizeColumnsToContents()

    def sourceSpec(self) -> str:
        p = self._parameterNode
        kernel = p.sourceKernelName.strip() or ("" if p.sourceKernel is KernelChoice.DETECTED else p.sourceKernel.value)
        return self.logic.sourceSpec(kernel, p.sourceDose, p.sourceThickness, p.sourceProfile.value)

    def targetChoice(self):
        """``(target, reference scan)`` of the panel's target choice (the Logic resolves it)."""
        p = self._parameterNode
        return self.logic.targetChoice(p.targetPreset, p.targetSpec, p.targetLikeVolume)

    # -- normalization -----------------------------------------------------------------
    def onApplyButton(self) -> None:
        if self._run is not None and self._run.state.running:
            self._log(_("Cancelling..."))
            self.logic.cancel(self._run)
            self.updateButtons()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the normalization."), waitCursor=True):
            p = self._parameterNode
            if self.ui.targetComboBox.count == 0:  # first use without the engine's packages
                self.logic.ensureDependencies()
                if self.fillChoices():
                    self.ui.statusLabel.text = _("Packages installed. Check the choices and press Apply.")
                return
            source = self.sourceSpec()
            self.logic.checkInput(p.inputVolume)  # a non-CT volume is refused before anything else
            target, like = self.targetChoice()
            installModels = self.logic.modelPackagesToInstall(p.method, p.inputVolume, source, target, like)
            self.logic.ensureDependencies(models=installModels)
            if installModels and not self._accelerators.get("torch"):
                self.startGpuCheck()  # torch was just installed: ask again which devices it sees
            self.ui.logTextEdit.clear()
            self.ui.progressBar.value = 0
            self._run = self.logic.startNormalization(
                p.inputVolume, target, source=source, method=p.method, device=p.device.value,
                outputNode=p.outputVolume, onEvent=self.onRunEvent, onFinished=self.onNormalizationFinished,
                targetLikeNode=like)
            self._pollers.append(QtPoller(self._run, 200).start())
            self.updateButtons()

    def onRunEvent(self, run, event) -> None:
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
            self._log(_("Warning: {message}").format(message=panel_message("WARNING", event.get("message", ""))))
        elif kind == "log":
            self._log(event.get("line", ""))
        elif kind == "import":
            self.ui.statusLabel.text = _("Loading the result...")

    def onNormalizationFinished(self, run) -> None:
        if run.state is RunState.COMPLETED:
            report = run.report  # the RunReport parsed when the result was imported
            self.ui.progressBar.value = 100
            done = _("Done in {s:.0f} s: {name}").format(s=run.elapsed_s, name=run.outputNode.GetName())
            if report.warnings:  # they are in the log above; the status line is what the eye reads
                done += "  " + _("({n} warnings: see the log)").format(n=len(report.warnings))
            self.ui.statusLabel.text = done
            for key, value in sorted(report.qc.items()):
                self._log(_("QC {key}: {value}").format(key=key, value=value))
            # the pair to compare is set even when the user is in another module (no GUI parameter node then)
            p = self._parameterNode or self.logic.getParameterNode()
            p.compareOriginal, p.compareNormalized = run.inputNode, run.outputNode
            if self._parameterNode is not None:
                self.onCompareButton()
        elif run.state is RunState.CANCELLED:
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = run.error_message or _("Cancelled.")
        else:
            text = panel_message(run.error_code, run.error_message)
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = _("Failed.")
            self._log(text)
            slicer.util.errorDisplay(text, windowTitle=_("CT Normalize"))
        self.updateButtons()
