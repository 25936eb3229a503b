"""The panel's comparison part: side-by-side views, window presets, difference, checkerboard,
fader and the lung HU histogram. A mixin of ``CTNormalizeWidget``."""

from __future__ import annotations

import qt
import slicer
from slicer.i18n import tr as _

from . import views
from .parameters import CompareView


class ComparePanel:
    """Needs ``self.ui``, ``self.logic``, ``self._parameterNode``."""

    def connectCompare(self) -> None:
        self.ui.compareButton.clicked.connect(self.onCompareButton)
        self.ui.lungWindowButton.clicked.connect(lambda: self.onWindowPreset("lung"))
        self.ui.mediastinumWindowButton.clicked.connect(lambda: self.onWindowPreset("mediastinum"))
        self.ui.boneWindowButton.clicked.connect(lambda: self.onWindowPreset("bone"))
        self.ui.fitButton.clicked.connect(self.onFitButton)
        self.ui.differenceButton.clicked.connect(self.onDifferenceButton)
        self.ui.checkerboardButton.clicked.connect(self.onCheckerboardButton)
        self.ui.histogramButton.clicked.connect(self.onHistogramButton)
        self.ui.faderSlider.valueChanged.connect(self.onFaderChanged)

    def _pair(self):
        p = self._parameterNode
        return p.compareOriginal, p.compareNormalized

    def onCompareButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not set up the comparison."), waitCursor=True):
            p = self._parameterNode
            a, b = self._pair()
            if p.compareView is CompareView.GRID:
                self.logic.compare(a, b, layout="grid", fit=False)
            else:
                self.logic.compare(a, b, layout="sideBySide", orientation=p.compareView.value, fit=False)
            self.ui.faderSlider.value = 0
            # fit once the layout manager has resized the new views (fitting now uses the old sizes)
            qt.QTimer.singleShot(100, self.onFitButton)

    def onWindowPreset(self, preset: str) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not set the window.")):
            self.logic.setWindowPreset(list(self._pair()), preset)

    def onFitButton(self) -> None:
        views.fit_slices(self.logic.appLogic)

    def onDifferenceButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not make the difference volume."), waitCursor=True):
            diff = self.logic.differenceVolume(*self._pair())
            self.ui.statusLabel.text = _("Difference volume: {name} (window ±150 HU)").format(name=diff.GetName())

    def onCheckerboardButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not make the checkerboard volume."), waitCursor=True):
            node = self.logic.checkerboardVolume(*self._pair())
            self.ui.statusLabel.text = _("Checkerboard volume: {name}").format(name=node.GetName())

    def onFaderChanged(self, value: int) -> None:
        a, b = self._pair()
        if a is None or b is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not fade between the volumes.")):
            self.logic.setFader(a, b, value / 100.0)

    def onHistogramButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not plot the lung HU histogram."), waitCursor=True):
            made = self.logic.histogramPlot(*self._pair())
            self.logic.showResults(self._lastTable, made["chart"])

    def updateCompareButtons(self) -> None:
        a, b = self._pair() if self._parameterNode else (None, None)
        ok = bool(a and b)
        for w in (self.ui.compareButton, self.ui.differenceButton, self.ui.checkerboardButton,
                  self.ui.histogramButton, self.ui.faderSlider):
            w.enabled = ok
