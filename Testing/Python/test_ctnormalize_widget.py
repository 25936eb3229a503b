"""The CT Normalize panel: its .ui loaded and the real Widget driven under PySide6 (offscreen).

Slicer's Qt (PythonQt, CTK, qMRML widgets) exists only inside Slicer, so this runs the real
``CTNormalizeWidget`` and its panel parts on slicer-core MRML with PySide6 standing in for
``qt`` (property-style access through ``true_property``), the .ui loaded by QUiLoader (CTK and
qMRML widgets fall back to their Qt base class), a small stand-in for Slicer's
parameterNodeWrapper (typed fields bound to the widgets named by ``SlicerParameterName``) and
stand-ins for a few slicer.util helpers. It checks the defaults, the disabled states, the
Apply/Cancel toggle with the real engine child process, the refusal of a non-CT volume and
the panel's wording of an engine error. The driver runs in a child process because it
replaces ``qt`` and ``slicer`` helpers.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_panel_under_pyside6(tmp_path):
    pytest.importorskip("PySide6", reason="needs PySide6 (pip install PySide6-Essentials)")
    slicer = pytest.importorskip("slicer", reason="needs slicer-core")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the 'slicer' module here is not slicer-core")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", CTN_WIDGET_WORK=str(tmp_path))
    res = subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=env, timeout=400, cwd=REPO)
    assert res.returncode == 0 and "ALL OK" in res.stdout, res.stdout + res.stderr[-3000:]


def _shims(work):
    """PySide6 as ``qt`` and the slicer helpers the panel uses; returns (app, scene, appLogic, errors, shown)."""
    import contextlib
    import types

    import vtk
    from PySide6 import QtCore, QtGui, QtWidgets
    from PySide6.QtUiTools import QUiLoader

    import slicer

    app = QtWidgets.QApplication([])
    qt = types.ModuleType("qt")
    for mod in (QtCore, QtWidgets, QtGui):
        for n in dir(mod):
            if n.startswith("Q") or n == "Qt":
                setattr(qt, n, getattr(mod, n))

    class QSettings(QtCore.QSettings):
        def __init__(self):
            super().__init__(os.path.join(work, "settings.ini"), QtCore.QSettings.IniFormat)
    qt.QSettings = QSettings
    sys.modules["qt"] = qt

    sys.path.insert(0, str(REPO / "Testing" / "Python"))
    from mrml_scene import make_mrml_scene

    m = make_mrml_scene()
    errors, shown = [], []

    @contextlib.contextmanager
    def tryWithErrorDisplay(message=None, show=True, waitCursor=False):
        try:
            yield
        except Exception as e:
            errors.append(f"{message} {e}")
            raise  # as Slicer's does, after showing the error: code after the block does not run

    def loadUI(path):
        f = QtCore.QFile(path)
        f.open(QtCore.QFile.ReadOnly)
        w = QUiLoader().load(f)
        w.setMRMLScene = lambda s: None
        for name in ("radiomicsSegmentSelector", "lungSegmentSelector"):  # qMRMLSegmentSelectorWidget calls
            sel = w.findChild(QtWidgets.QWidget, name)
            sel.currentNode = lambda: None
            sel.selectedSegmentIDs = lambda: []
            sel.currentSegmentID = lambda: ""
        return w

    def childWidgetVariables(w):
        ns = types.SimpleNamespace()
        for c in w.findChildren(QtCore.QObject):
            if c.objectName():
                setattr(ns, c.objectName(), c)
        return ns

    class VTKObservationMixin:
        def __init__(self):
            self._obs = []

        def addObserver(self, obj, ev, fn):
            self._obs.append((obj, ev, fn, obj.AddObserver(ev, fn)))

        def removeObserver(self, obj, ev, fn):
            for o in [o for o in self._obs if o[0] is obj and o[1] == ev and o[2] == fn]:
                obj.RemoveObserver(o[3])
                self._obs.remove(o)

        def removeObservers(self):
            for obj, _, _, tag in self._obs:
                obj.RemoveObserver(tag)
            self._obs = []

    slicer.util.loadUI, slicer.util.childWidgetVariables = loadUI, childWidgetVariables
    slicer.util.tryWithErrorDisplay, slicer.util.VTKObservationMixin = tryWithErrorDisplay, VTKObservationMixin
    slicer.util.errorDisplay = lambda text, windowTitle=None, **k: shown.append(text)

    def launchConsoleProcess(args, useStartupEnvironment=True, updateEnvironment=None, cwd=None):
        import subprocess  # as slicer.util's: text mode in the locale's encoding, stderr merged

        env = dict(os.environ, **(updateEnvironment or {}))
        return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                universal_newlines=True, cwd=cwd)
    slicer.util.launchConsoleProcess = launchConsoleProcess
    slicer.app = types.SimpleNamespace(connect=lambda *a: None, disconnect=lambda *a: None, temporaryPath=work, processEvents=app.processEvents,
                                       applicationLogic=lambda: m.app)
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda t: t
    i18n.translate = lambda c, t: t
    sys.modules["slicer.i18n"] = i18n
    _parameter_wrapper_stub(QtWidgets)
    slm = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = QtWidgets.QWidget()
            self.parent.isEntered = True
            self.layout = QtWidgets.QVBoxLayout(self.parent)

        def setup(self):
            pass

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            pass

        def getParameterNode(self):
            node = m.scene.GetSingletonNode("CTNormalize", "vtkMRMLScriptedModuleNode")
            if node is None:
                node = slicer.vtkMRMLScriptedModuleNode()
                node.SetSingletonTag("CTNormalize")
                m.scene.AddNode(node)
            return node

    class ScriptedLoadableModuleTest:
        pass

    for c in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
              ScriptedLoadableModuleTest):
        setattr(slm, c.__name__, c)
    sys.modules["slicer.ScriptedLoadableModule"] = slm
    return app, m, errors, shown, vtk


def _parameter_wrapper_stub(QtWidgets):
    """A small stand-in for slicer.parameterNodeWrapper: typed fields, defaults, connectGui, ModifiedEvent."""
    import enum
    import types

    import vtk

    mod = types.ModuleType("slicer.parameterNodeWrapper")

    class WithinRange:
        def __init__(self, lo, hi):
            self.lo, self.hi = lo, hi

    def parameterNodeWrapper(cls):
        fields = {k: getattr(cls, k, None) for k in cls.__annotations__}

        class Wrapped:
            def __init__(self, node):
                object.__setattr__(self, "_node", node)
                store = getattr(node, "_ctn_values", None)
                if store is None:
                    store = dict(fields)
                    node._ctn_values = store
                object.__setattr__(self, "_v", store)
                object.__setattr__(self, "_gui", [])

            def __getattr__(self, k):
                if k in fields:
                    return self._v[k]
                raise AttributeError(k)

            def __setattr__(self, k, value):
                self._v[k] = value
                for sync in self._gui:
                    sync(k)
                self._node.Modified()

            def AddObserver(self, ev, fn):
                return self._node.AddObserver(ev, fn)

            def RemoveObserver(self, tag):
                self._node.RemoveObserver(tag)

            def connectGui(self, ui):
                bound = {}
                for w in vars(ui).values():
                    name = w.property("SlicerParameterName") if hasattr(w, "property") else None
                    if name in fields:
                        bound[name] = w
                for name, w in bound.items():
                    value = self._v[name]
                    if isinstance(w, QtWidgets.QComboBox) and isinstance(value, enum.Enum):
                        w.clear()
                        for e in type(value):
                            w.addItem(e.label(), e)
                        w.setCurrentIndex(w.findData(value))
                        w.currentIndexChanged.connect(lambda i, w=w, n=name: self._v.__setitem__(n, w.itemData(i)) or self._node.Modified())
                    elif isinstance(w, QtWidgets.QDoubleSpinBox):
                        w.setValue(float(value))
                        w.valueChanged.connect(lambda v, n=name: self._v.__setitem__(n, float(v)) or self._node.Modified())
                    elif isinstance(w, QtWidgets.QLineEdit):
                        w.setText(str(value))
                        w.textChanged.connect(lambda t, n=name: self._v.__setitem__(n, t) or self._node.Modified())

                def sync(k):
                    w = bound.get(k)
                    if isinstance(w, QtWidgets.QComboBox) and isinstance(self._v[k], enum.Enum):
                        w.setCurrentIndex(w.findData(self._v[k]))
                self._gui.append(sync)
                return sync

            def disconnectGui(self, tag):
                if tag in self._gui:
                    self._gui.remove(tag)

        Wrapped.__name__ = cls.__name__
        return Wrapped

    mod.parameterNodeWrapper, mod.WithinRange = parameterNodeWrapper, WithinRange
    sys.modules["slicer.parameterNodeWrapper"] = mod
    del vtk


def _load(name, path, package=None):
    """Import a source file with PySide6's property-style access, as PythonQt offers."""
    import types

    mod = types.ModuleType(name)
    mod.__file__ = str(path)
    if package:
        mod.__package__ = package
    sys.modules[name] = mod
    src = Path(path).read_text()
    future = "from __future__ import annotations\n"
    src = src.replace(future, future + "from __feature__ import true_property\n", 1) if future in src else \
        "from __feature__ import true_property\n" + src
    exec(compile(src, str(path), "exec"), mod.__dict__)
    return mod


def _drive():
    import time

    import numpy as np

    work = os.environ["CTN_WIDGET_WORK"]
    app, m, errors, shown, vtk = _shims(work)
    import slicer

    sys.path.insert(0, str(REPO / "CTNormalize"))
    import CTNormalizeSlicerLib  # noqa: F401
    lib = REPO / "CTNormalize" / "CTNormalizeSlicerLib"
    for part in ("parameters", "panel_normalize", "panel_compare", "panel_results"):
        _load(f"CTNormalizeSlicerLib.{part}", lib / f"{part}.py", "CTNormalizeSlicerLib")
    mod = _load("CTNormalize", REPO / "CTNormalize" / "CTNormalize.py")

    def check(cond, what):
        print(("ok   " if cond else "FAIL ") + what)
        if not cond:
            check.failed = True
    check.failed = False

    def volume(name, arr, spacing=(0.8, 0.8, 1.0)):
        node = m.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        img = vtk.vtkImageData()
        img.SetDimensions(arr.shape[2], arr.shape[1], arr.shape[0])
        img.AllocateScalars(vtk.VTK_SHORT, 1)
        node.SetAndObserveImageData(img)
        node.SetSpacing(*spacing)
        slicer.util.updateVolumeFromArray(node, np.round(arr).astype(np.int16))
        node.CreateDefaultDisplayNodes()
        return node

    def wait(run, timeout=180):
        t0 = time.monotonic()
        while run.state.running and time.monotonic() - t0 < timeout:
            app.processEvents()
            time.sleep(0.05)
        for _ in range(5):
            app.processEvents()

    def cancel_once_started(run):
        """Wait until the engine says it started, press Cancel (the Apply button), wait for the end."""
        t0 = time.monotonic()
        while run.state.running and run.started_event is None and time.monotonic() - t0 < 120:
            app.processEvents()
            time.sleep(0.05)
        ui.applyButton.click()
        wait(run)

    w = mod.CTNormalizeWidget()
    w.setup()
    ui, p = w.ui, w._parameterNode
    w.logic.tempRoot = work
    # -- defaults and disabled states, empty scene
    check(ui.targetComboBox.currentData() == "emphysema-reference", f"default target {ui.targetComboBox.currentData()}")
    check(ui.methodComboBox.currentData() == "auto" and ui.methodComboBox.currentText() == "Auto", "default method Auto")
    check(ui.deviceComboBox.currentText() == "Auto", f"default device {ui.deviceComboBox.currentText()}")
    check(ui.sourceKernelComboBox.currentText() == "Detected", "kernel on Detected")
    check(ui.sourceDoseSpinBox.value() == 0 and ui.sourceThicknessSpinBox.value() == 0, "dose and thickness detected (0)")
    check(ui.sourceProfileComboBox.currentText() == "Detected" and ui.sourceProfileComboBox.count() == 3,
          f"slice profile on Detected ({ui.sourceProfileComboBox.currentText()}, {ui.sourceProfileComboBox.count()})")
    check(not ui.applyButton.isEnabled() and ui.applyButton.toolTip() == "Select an input volume", "Apply disabled without input")
    check(not ui.targetSpecLineEdit.isEnabled(), "custom spec disabled for a preset")
    for name in ("compareButton", "differenceButton", "checkerboardButton", "histogramButton", "faderSlider",
                 "radiomicsButton", "emphysemaButton", "exportDicomButton"):
        check(not getattr(ui, name).isEnabled(), f"{name} disabled without two volumes")
    check(ui.modelsListWidget.count() >= 1, f"models list filled ({ui.modelsListWidget.count()})")
    # -- a non-CT volume is refused in plain words, before anything runs
    mr = volume("brain MR", np.random.default_rng(0).uniform(0, 900, (8, 32, 32)))
    p.inputVolume = mr
    check(ui.applyButton.isEnabled(), "Apply enabled with an input")
    ui.applyButton.click()
    check(w._run is None and any("cannot be normalized" in e for e in errors), f"non-CT refused: {errors}")
    errors.clear()
    # -- Apply turns into Cancel; Cancel stops the real engine
    rng = np.random.default_rng(5)
    arr = np.full((40, 160, 160), -1000.0)
    arr[:, 16:144, 16:144] = 40.0
    arr[:, 30:130, 24:76] = -850.0
    arr += rng.normal(0, 30, arr.shape)
    ct = volume("chest", arr)
    p.inputVolume = ct
    ui.sourceKernelNameLineEdit.setText("sharp")
    ui.sourceDoseSpinBox.setValue(0.25)
    ui.sourceThicknessSpinBox.setValue(1.0)
    ui.sourceProfileComboBox.setCurrentIndex(ui.sourceProfileComboBox.findText("Axial (rectangular)"))
    ui.targetComboBox.setCurrentIndex(ui.targetComboBox.findData("custom"))
    check(ui.targetSpecLineEdit.isEnabled(), "custom spec enabled for Custom...")
    ui.targetSpecLineEdit.setText("kernel=smooth,dose=1,thickness=3")
    ui.methodComboBox.setCurrentIndex(ui.methodComboBox.findData("denoise"))
    ui.deviceComboBox.setCurrentIndex(ui.deviceComboBox.findText("CPU"))
    from CTNormalizeSlicerLib import settings as panel_settings

    check(panel_settings.get("device") == "cpu", f"device choice saved at once ({panel_settings.get('device')})")
    # refilling the choices (another models folder) keeps the target and the method
    w.onModelsDirectoryChanged()
    check(p.targetPreset == "custom" and p.method == "denoise" and ui.methodComboBox.currentData() == "denoise",
          f"choices kept when refilled ({p.targetPreset}, {p.method})")
    ui.applyButton.click()
    run = w._run
    check(not errors and run is not None and ui.applyButton.text() == "Cancel", f"Apply -> Cancel {errors}")
    cancel_once_started(run)
    check(run.state.value == "cancelled" and ui.applyButton.text() == "Apply" and ui.applyButton.isEnabled(),
          f"Cancel -> Apply ({run.state.value}, {ui.applyButton.text()})")
    check(ui.statusLabel.text().startswith("Cancel"), f"status says cancelled: {ui.statusLabel.text()}")
    check(not os.path.exists(run.tempDir), "temp folder removed")
    check(run.args[run.args.index("--source") + 1] == "kernel=sharp,dose=0.25,thickness=1,profile=rect",
          f"overrides sent ({run.args[run.args.index('--source') + 1]})")
    # -- target "like a reference scan": the selector is enabled, a reference is required, and it travels
    ui.targetComboBox.setCurrentIndex(ui.targetComboBox.findData("like"))
    check(p.targetPreset == "like" and ui.targetLikeSelector.isEnabled() and not ui.targetSpecLineEdit.isEnabled(),
          "reference selector enabled for Like a reference scan...")
    ui.applyButton.click()
    check(w._run is run and any("reference scan" in e for e in errors), f"no reference refused: {errors}")
    errors.clear()
    p.targetLikeVolume = volume("reference", arr + 3)
    ui.applyButton.click()
    like_run = w._run
    check(not errors and like_run is not run and like_run.args[like_run.args.index("--target-like") + 1].endswith(
        os.path.join("reference", "reference.nrrd")) and "--target" not in like_run.args, f"reference sent: {errors}")
    cancel_once_started(like_run)
    check(like_run.state.value == "cancelled", f"reference run cancelled ({like_run.state.value})")
    ui.targetComboBox.setCurrentIndex(ui.targetComboBox.findData("custom"))
    check(not ui.targetLikeSelector.isEnabled(), "reference selector disabled again for Custom...")
    # -- an engine error in the panel's words
    ui.targetSpecLineEdit.setText("kernel=nosuchkernel")
    ui.applyButton.click()
    wait(w._run)
    check(shown and "nosuchkernel" in shown[-1] and "--" not in shown[-1], f"error shown as: {shown}")
    check(ui.progressBar.value() == 0, f"a failed run empties the progress bar ({ui.progressBar.value()})")
    # -- with two volumes the comparison tools are enabled
    p.compareOriginal, p.compareNormalized = ct, volume("chest 2", arr + 5)
    for name in ("compareButton", "differenceButton", "checkerboardButton", "histogramButton", "faderSlider",
                 "radiomicsButton", "emphysemaButton"):
        check(getattr(ui, name).isEnabled(), f"{name} enabled with two volumes")
    ui.differenceButton.click()
    check(not errors and "Difference volume" in ui.statusLabel.text(), f"difference: {errors} {ui.statusLabel.text()}")
    # a finished run's warnings reach the status line, not only the log
    from CTNormalizeLib import Volume as EngineVolume
    from CTNormalizeLib.normalization import normalize as engine_normalize
    from CTNormalizeSlicerLib.process import RunState as PanelRunState

    outcome = engine_normalize(EngineVolume(arr[:6].astype(np.float32), (2.0, 0.8, 0.8)), "kernel=sharp,dose=0.25,thickness=2",
                               "kernel=smooth,dose=1,thickness=2", method="mtf_ratio")
    import dataclasses
    import types

    report = dataclasses.replace(outcome.report("in.nrrd", "out.nrrd"), warnings=[{"code": "QC_SEAMS", "message": "x"}] * 2)
    finished = types.SimpleNamespace(state=PanelRunState.COMPLETED, elapsed_s=3.0, outputNode=ct, inputNode=ct,
                                     report=report)
    w.onNormalizationFinished(finished)
    check(ui.statusLabel.text().endswith("(2 warnings: see the log)"), f"warnings on the status: {ui.statusLabel.text()}")
    # finished while the user is in another module (no GUI parameter node): the pair to compare is still set
    w._parameterNode, gui_node = None, w._parameterNode
    other = volume("other result", arr + 1)
    w.onNormalizationFinished(types.SimpleNamespace(**{**vars(finished), "outputNode": other}))
    w._parameterNode = gui_node
    check(p.compareNormalized is other, "the result is set to compare after a run finished elsewhere")
    # a saved method that is no longer installed is not shown as Auto while still sent: it becomes Auto, said
    p.method = "my-lab-model-v2"
    w.selectSavedChoices()
    check(p.method == "auto" and ui.methodComboBox.currentData() == "auto"
          and "my-lab-model-v2 is not installed" in ui.logTextEdit.toPlainText(), f"missing method -> Auto ({p.method})")
    ui.deviceComboBox.setCurrentIndex(ui.deviceComboBox.findText("Auto"))
    check(panel_settings.get("device") == "auto", f"device Auto saved ({panel_settings.get('device')})")
    w.cleanup()
    print("FAILED" if check.failed else "ALL OK")
    sys.exit(1 if check.failed else 0)


if __name__ == "__main__":
    _drive()
