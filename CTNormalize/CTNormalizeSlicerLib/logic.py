"""The behaviour of the CTNormalize module, without any Qt widget.

:class:`NormalizationLogic` is the base of ``CTNormalizeLogic`` in ``CTNormalize.py``; it works
on the scene given (or ``slicer.mrmlScene``), so it runs inside Slicer and headless against
the ``slicer-core`` wheel. It is composed of one mixin per job: normalization
(:mod:`.normalization`), radiomics and emphysema (:mod:`.quantification`) and the comparison
views below. Long work runs in child processes (:mod:`.process`) tracked by a
:class:`.runs.RunRegistry`, which stops them when the scene closes.
"""

from __future__ import annotations

import tempfile
from typing import Optional

from . import choices, compare, settings, views
from .i18n import _
from .normalization import NormalizationMixin
from .process import EngineRun
from .quantification import QuantificationMixin, RadiomicsSettings  # noqa: F401 (part of the API)
from .runs import RunRegistry

PROTOCOL_FIELDS = choices.PROTOCOL_FIELDS


class CompareMixin:
    """Side-by-side views, window presets and sync, difference / checkerboard / fader, HU histogram, results layout."""

    def compare(self, originalNode, normalizedNode, layout: str = "sideBySide", orientation: str = "Axial",
                window: Optional[str] = "lung", fit: bool = True, syncWindow: bool = True) -> list:
        """Show original (left/top) and normalized (right/bottom), linked, in a CT window.

        ``layout`` is ``"sideBySide"`` (one orientation) or ``"grid"`` (2x3: both volumes in
        axial, coronal, sagittal). With ``syncWindow`` a window/level change on either volume
        follows on the other. Returns the slice composite nodes that were set.
        """
        if originalNode is None or normalizedNode is None:
            raise ValueError(_("Select both the original and the normalized volume to compare."))
        if layout == "grid":
            comps = views.show_grid(self.scene, originalNode, normalizedNode, window=window)
        elif layout == "sideBySide":
            comps = views.show_side_by_side(self.scene, originalNode, normalizedNode, orientation, window)
        else:
            raise ValueError(f"layout must be sideBySide or grid, not {layout!r}.")
        if syncWindow:
            self.syncWindowLevel(originalNode, normalizedNode)
        if fit:
            views.fit_slices(self.appLogic)
        return comps

    def syncWindowLevel(self, a, b) -> None:
        self.stopWindowLevelSync()
        self._wlSync = views.WindowLevelSync(a, b)

    def stopWindowLevelSync(self) -> None:
        if getattr(self, "_wlSync", None) is not None:
            self._wlSync.stop()
        self._wlSync = None

    @staticmethod
    def setWindowPreset(volumeNodes, preset: str):
        return views.apply_window(volumeNodes, preset)

    @staticmethod
    def _pairKey(kind: str, originalNode, normalizedNode) -> tuple:
        # one derived node per pair: another pair's difference must not land in (and rename) this pair's node
        return kind, originalNode.GetID() if originalNode else None, normalizedNode.GetID() if normalizedNode else None

    def differenceVolume(self, originalNode, normalizedNode):
        """``normalized - original`` as a volume (updated in place on later calls for the same pair)."""
        key = self._pairKey("difference", originalNode, normalizedNode)
        self._derived[key] = compare.difference_volume(self.scene, originalNode, normalizedNode,
                                                       self._derived.get(key))
        return self._derived[key]

    def checkerboardVolume(self, originalNode, normalizedNode, squareMm: float = 20.0):
        key = self._pairKey("checkerboard", originalNode, normalizedNode)
        self._derived[key] = compare.checkerboard_volume(self.scene, originalNode, normalizedNode, squareMm,
                                                         self._derived.get(key))
        return self._derived[key]

    def setFader(self, originalNode, normalizedNode, opacity: float):
        return compare.set_fader(self.scene, originalNode, normalizedNode, opacity)

    def histogramPlot(self, originalNode, normalizedNode) -> dict:
        """The lung HU histograms of both volumes as a plot chart node (``["chart"]``)."""
        key = self._pairKey("histogram", originalNode, normalizedNode)
        self._derived[key] = compare.histogram_plot(self.scene, originalNode, normalizedNode, self._derived.get(key))
        return self._derived[key]

    def showResults(self, tableNode=None, chartNode=None) -> int:
        """Show a results table / plot below the side-by-side views (a custom layout)."""
        return views.show_results(self.scene, tableNode, chartNode, self.appLogic)


class NormalizationLogic(NormalizationMixin, QuantificationMixin, CompareMixin):
    """Normalization, comparison and quantification on MRML nodes.

    Parameters
    ----------
    scene : vtkMRMLScene, optional
        Defaults to ``slicer.mrmlScene``.
    appLogic : vtkMRMLApplicationLogic, optional
        Used to fit slice views; defaults to ``slicer.app.applicationLogic()`` when there is one.
    python : str, optional
        Interpreter for the engine (default: PythonSlicer in Slicer, else this interpreter).
    """

    def __init__(self, scene=None, appLogic=None, python: Optional[str] = None):
        self._scene = scene
        self._appLogic = appLogic
        self.python = python
        self.tempRoot: Optional[str] = None
        self.currentRun: Optional[EngineRun] = None
        self.runs = RunRegistry()
        self._derived: dict = {}
        self._wlSync = None
        self.modelsDirectory = settings.get("modelsDirectory") or None
        try:
            self.runs.watch(self.scene)  # again at every run start: the scene may come later
        except (ImportError, AttributeError):  # no scene yet (plain Python, GPU check only)
            pass

    # -- environment -----------------------------------------------------------------------
    @property
    def scene(self):
        if self._scene is not None:
            return self._scene
        import slicer

        return slicer.mrmlScene

    @property
    def appLogic(self):
        if self._appLogic is not None:
            return self._appLogic
        import slicer

        app = getattr(slicer, "app", None)
        return app.applicationLogic() if app is not None else None

    def makeTempDir(self, prefix: str = "CTNormalize-") -> str:
        """A fresh folder under Slicer's temporary path (or the system's)."""
        root = self.tempRoot
        if root is None:
            try:
                import slicer

                root = slicer.app.temporaryPath
            except (ImportError, AttributeError):
                root = None
        return tempfile.mkdtemp(prefix=prefix, dir=root)

    def setModelsDirectory(self, path: str) -> None:
        """Also search ``path`` for learned models (remembered in the settings)."""
        self.modelsDirectory = path or None
        settings.set("modelsDirectory", path or "")
        settings.apply_models_directory(path)

    # -- choices shown in the panel (thin wrappers, kept for scripts) ------------------------
    presets = staticmethod(choices.presets)
    kernelChoices = staticmethod(choices.kernel_choices)
    methods = staticmethod(choices.methods)
    protocolRows = staticmethod(choices.protocol_rows)
    sourceSpec = staticmethod(choices.source_spec)
    targetChoice = staticmethod(choices.target_choice)
    outputName = staticmethod(choices.output_name)
    installedModels = staticmethod(choices.installed_models)

    def startGpuCheck(self, onFinished) -> Optional[EngineRun]:
        """Ask a child Python which accelerators torch sees; ``onFinished({"cuda": bool, "mps": bool})``.

        torch is never imported in Slicer's process for this; without torch the answer is
        "none" at once (returns None then).
        """
        from . import engine
        from .dependencies import torch_installed

        if not torch_installed():
            onFinished({"cuda": False, "mps": False})
            return None
        code = ("import torch; m = getattr(torch.backends, 'mps', None); "
                "print('CTN_GPU', int(torch.cuda.is_available()), int(bool(m and m.is_available())))")
        args = [self.python or engine.python_executable(), "-c", code]

        def finished(run):
            found = {"cuda": False, "mps": False}
            for line in run.output_lines:
                parts = line.split()
                if len(parts) == 3 and parts[0] == "CTN_GPU":
                    found = {"cuda": parts[1] == "1", "mps": parts[2] == "1"}
            onFinished(found)

        return EngineRun(args, on_finished=finished, auto_complete=True).start()
