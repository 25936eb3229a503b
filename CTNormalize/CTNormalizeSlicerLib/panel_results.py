"""The panel's measurement part: radiomics and emphysema with Cancel and progress, saving the
results and exporting the normalized volume to DICOM. A mixin of ``CTNormalizeWidget``."""

from __future__ import annotations

import qt
import slicer
from slicer.i18n import tr as _

from . import export
from .messages import panel_message
from .process import QtPoller, RunState
from .quantification import RadiomicsSettings


class ResultsPanel:
    """Needs ``self.ui``, ``self.logic``, ``self._parameterNode``, ``self._pollers``, ``self._log``."""

    def connectResults(self) -> None:
        self.ui.radiomicsButton.clicked.connect(self.onRadiomicsButton)
        self.ui.emphysemaButton.clicked.connect(self.onEmphysemaButton)
        self.ui.saveResultsButton.clicked.connect(self.onSaveResultsButton)
        self.ui.exportDicomButton.clicked.connect(self.onExportDicomButton)

    def radiomicsSettings(self) -> RadiomicsSettings:
        p = self._parameterNode
        classes = [c.strip() for c in p.radiomicsFeatureClasses.split(",") if c.strip()]
        return RadiomicsSettings(paramsFile=p.radiomicsParamsFile.strip(), featureClasses=classes,
                                 binWidth=p.radiomicsBinWidth, resampledSpacing=p.radiomicsResampling)

    def _quantRunning(self) -> bool:
        return self._quantRun is not None and self._quantRun.state.running

    def _cancelQuant(self) -> bool:
        if not self._quantRunning():
            return False
        self._quantRun.cancel()
        self.ui.statusLabel.text = _("Cancelling...")
        self.updateButtons()
        return True

    def _startQuant(self, start, label: str) -> None:
        self._quantRun = start()
        self._quantLabel = label
        self.ui.quantProgressBar.visible = True
        self.ui.quantProgressBar.maximum = 0  # busy: the engine reports no fraction for these
        self.ui.statusLabel.text = label
        self._pollers.append(QtPoller(self._quantRun, 300, on_tick=self._onQuantTick).start())
        self.updateButtons()

    def _onQuantTick(self, run) -> None:
        if run.state.running:
            self.ui.statusLabel.text = f"{self._quantLabel} ({run.elapsed_s:.0f} s)"

    def onRadiomicsButton(self) -> None:
        if self._cancelQuant():
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start radiomics."), waitCursor=True):
            self.logic.ensureDependencies(radiomics=True)
            p = self._parameterNode
            seg = self.ui.radiomicsSegmentSelector.currentNode()
            ids = list(self.ui.radiomicsSegmentSelector.selectedSegmentIDs()) if seg else []
            self._startQuant(lambda: self.logic.startRadiomics(
                p.compareOriginal, p.compareNormalized, seg, ids or None, settings=self.radiomicsSettings(),
                onEvent=self.onRunEvent, onFinished=self.onQuantFinished), _("Radiomics running on both volumes"))

    def onEmphysemaButton(self) -> None:
        if self._cancelQuant():
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the emphysema measurement."), waitCursor=True):
            self.logic.ensureDependencies()
            p = self._parameterNode
            seg = self.ui.lungSegmentSelector.currentNode()
            lung = self.ui.lungSegmentSelector.currentSegmentID() if seg else ""
            self._startQuant(lambda: self.logic.startEmphysema(
                p.compareOriginal, p.compareNormalized, seg, lung, threshold=p.emphysemaThreshold,
                onEvent=self.onRunEvent, onFinished=self.onQuantFinished), _("Emphysema index running on both volumes"))

    def onQuantFinished(self, run) -> None:
        self.ui.quantProgressBar.visible = False
        if run.state is RunState.COMPLETED:
            self._lastTable = run.tableNode
            self.ui.statusLabel.text = _("Results in table {name}").format(name=run.tableNode.GetName())
            self.logic.showResults(run.tableNode)
        elif run.state is RunState.CANCELLED:
            self.ui.statusLabel.text = run.error_message or _("Cancelled.")
        else:
            text = panel_message(run.error_code, run.error_message)
            self.ui.statusLabel.text = _("Failed.")
            self._log(text)
            slicer.util.errorDisplay(text, windowTitle=_("CT Normalize"))
        self.updateButtons()

    def onSaveResultsButton(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(None, _("Save results into folder"))
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not save the results."), waitCursor=True):
            written = export.save_results(folder, self.logic.resultTables(), self._parameterNode.compareNormalized)
            self.ui.statusLabel.text = _("Saved {n} files to {folder}").format(n=len(written), folder=folder)

    def onExportDicomButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not export to DICOM."), waitCursor=True):
            p = self._parameterNode
            got = export.export_dicom(p.compareNormalized, p.compareOriginal)
            self.ui.statusLabel.text = _("Added a derived series of {n} images to the DICOM database.").format(
                n=got["files"])
            for w in got["warnings"]:
                self._log(_("Warning: {message}").format(message=w.get("message", w.get("code", ""))))

    def updateResultsButtons(self) -> None:
        p = self._parameterNode
        pair = bool(p and p.compareOriginal and p.compareNormalized)
        busy = self._quantRunning()
        kind = getattr(self._quantRun, "kind", "") if busy else ""
        for button, mine, idle in ((self.ui.radiomicsButton, "radiomics", _("Radiomics on both volumes")),
                                   (self.ui.emphysemaButton, "emphysema", _("Emphysema index on both volumes"))):
            button.text = _("Cancel") if kind == mine else idle
            button.enabled = (pair and not busy) or kind == mine
        self.ui.saveResultsButton.enabled = bool(self.logic.resultTables()) or bool(p and p.compareNormalized)
        self.ui.exportDicomButton.enabled = bool(pair and export.dicom_writer() is not None)
