"""The reader-study Widget, driven under PySide6 (offscreen) with PythonQt-like shims.

Slicer's Qt (PythonQt, CTK) is not available outside Slicer, so this runs the real
``CTNormalizeReaderStudyWidget`` and Logic on slicer-core MRML with PySide6 standing in for
``qt``: the .ui is loaded with QUiLoader (CTK widgets fall back to their Qt base class),
property-style access comes from PySide6's ``true_property``, and slicer.util helpers are
small stand-ins. It checks buttons, keyboard shortcuts, Next/Previous enabling, the pair
draft, protocol combos and the answer lines. Skipped unless PySide6 and slicer-core are
installed (neither is a project dependency): ``pip install PySide6-Essentials slicer-core``.
The driver runs in a child process because it replaces ``qt`` and ``slicer.util`` helpers.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_widget_under_pyside6(tmp_path):
    pytest.importorskip("PySide6", reason="needs PySide6 (pip install PySide6-Essentials)")
    slicer = pytest.importorskip("slicer", reason="needs slicer-core")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the 'slicer' module here is not slicer-core")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", READERSTUDY_WIDGET_WORK=str(tmp_path))
    res = subprocess.run([sys.executable, __file__], capture_output=True, text=True, env=env, timeout=300,
                         cwd=REPO)
    assert res.returncode == 0 and "ALL OK" in res.stdout, res.stdout + res.stderr[-3000:]


def _drive():
    import contextlib
    import glob
    import json
    import types

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    WORK = os.environ["READERSTUDY_WIDGET_WORK"]
    sys.path.insert(0, str(REPO / "CTNormalizeReaderStudy"))
    sys.path.insert(0, str(REPO / "Testing" / "Python"))
    from PySide6 import QtCore, QtWidgets, QtGui
    from PySide6.QtUiTools import QUiLoader
    app = QtWidgets.QApplication([])
    import slicer, vtk

    # --- qt shim (PythonQt style) ---
    qt = types.ModuleType("qt")
    for mod in (QtCore, QtWidgets, QtGui):
        for n in dir(mod):
            if n.startswith("Q") or n == "Qt":
                setattr(qt, n, getattr(mod, n))
    class QShortcut(QtGui.QShortcut):
        def connect(self, signal, fn):
            assert signal == "activated()"; self.activated.connect(fn)
    qt.QShortcut = QShortcut
    class QSettings(QtCore.QSettings):
        def __init__(self): super().__init__(os.path.join(WORK, "settings.ini"), QtCore.QSettings.IniFormat)
    qt.QSettings = QSettings
    sys.modules["qt"] = qt

    # --- slicer shims ---
    scene = slicer.vtkMRMLScene()
    appl = slicer.vtkSlicerApplicationLogic(); appl.SetMRMLScene(scene)
    colors = appl.GetColorLogic(); colors.SetMRMLScene(scene); colors.AddDefaultColorNodes(); appl.SetModuleLogic("Colors", colors)
    ll = slicer.vtkMRMLLayoutLogic(); ll.SetMRMLScene(scene)
    appl.SetSliceLogics(vtk.vtkCollection())
    for name in ("Red", "Yellow"):
        sl = slicer.vtkMRMLSliceLogic(); sl.SetMRMLApplicationLogic(appl); appl.GetSliceLogics().AddItem(sl)
        sl.SetMRMLScene(scene); sl.SetSliceNode(scene.GetSingletonNode(name, "vtkMRMLSliceNode"))
    slicer.mrmlScene = scene
    main = QtWidgets.QMainWindow()
    errors = []
    import contextlib
    @contextlib.contextmanager
    def tryWithErrorDisplay(message=None, show=True, waitCursor=False):
        try:
            yield
        except Exception as e:
            errors.append(f"{message} {e}")
            raise  # as Slicer's does, after showing the error
    def loadUI(path):
        f = QtCore.QFile(path); f.open(QtCore.QFile.ReadOnly)
        w = QUiLoader().load(f)
        w.setMRMLScene = lambda s: None
        d = w.findChild(QtWidgets.QWidget, "studyDirectoryButton"); d.directory = ""
        return w
    def childWidgetVariables(w):
        ns = types.SimpleNamespace()
        for c in w.findChildren(QtCore.QObject):
            if c.objectName(): setattr(ns, c.objectName(), c)
        return ns
    class VTKObservationMixin:
        def __init__(self): self.obs = []
        def addObserver(self, obj, ev, fn): self.obs.append(obj.AddObserver(ev, fn))
        def removeObservers(self): pass
    slicer.util.loadUI = loadUI; slicer.util.childWidgetVariables = childWidgetVariables
    slicer.util.tryWithErrorDisplay = tryWithErrorDisplay; slicer.util.mainWindow = lambda: main
    slicer.util.VTKObservationMixin = VTKObservationMixin
    i18n = types.ModuleType("slicer.i18n"); i18n.tr = lambda t: t; i18n.translate = lambda c, t: t; sys.modules["slicer.i18n"] = i18n
    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    class ScriptedLoadableModule:
        def __init__(self, parent): self.parent = parent
    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = QtWidgets.QWidget(); self.layout = QtWidgets.QVBoxLayout(self.parent)
        def setup(self): pass
        def enter(self): pass
        def exit(self): pass
        def resourcePath(self, f): return os.path.join(str(REPO), "CTNormalizeReaderStudy/Resources", f)
    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None): pass
    class ScriptedLoadableModuleTest: pass
    for c in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest):
        setattr(slm, c.__name__, c)
    sys.modules["slicer.ScriptedLoadableModule"] = slm

    # Load the module source with PySide6's property-style access (as PythonQt offers).
    src = open(REPO / "CTNormalizeReaderStudy" / "CTNormalizeReaderStudy.py").read()
    mod = types.ModuleType("CTNormalizeReaderStudy"); mod.__file__ = str(REPO / "CTNormalizeReaderStudy" / "CTNormalizeReaderStudy.py")
    exec(compile("from __feature__ import true_property\n" + src, mod.__file__, "exec"), mod.__dict__)

    # --- a study ---
    import shutil
    from pathlib import Path
    from test_readerstudy import make_manifest
    from CTNormalizeLib.readerstudy import create_study
    root = Path(WORK) / "data"
    manifest = make_manifest(root / "m", n_cases=3, protocols=True)
    for design in ("single", "pair", "protocol"):
        create_study(manifest, root / design, design, 1)

    def check(cond, what):
        print(("ok   " if cond else "FAIL ") + what)
        if not cond: check.failed = True
    check.failed = False

    w = mod.CTNormalizeReaderStudyWidget(); w.setup(); ui = w.ui
    def press(seq):
        for sc in w.shortcuts:
            if sc.key() == QtGui.QKeySequence(seq): sc.activated.emit(); return
        raise AssertionError(f"no shortcut {seq}")

    # single
    ui.studyDirectoryButton.directory = str(root / "single"); ui.readerNameEdit.setText("Dr W")
    w.onOpen()
    check(not errors, f"open single {errors}")
    check(ui.progressLabel.text() == "Item 1 of 3 (0 answered)", ui.progressLabel.text())
    check(not ui.nextButton.isEnabled() and not ui.previousButton.isEnabled(), "next/previous disabled before answering")
    check(ui.score4Button.text().startswith("4  probably original"), ui.score4Button.text())
    w.exit()  # another module shown: the reading keys must not act there
    check(w.shortcuts == [], "shortcuts removed when the module is left")
    w.enter()
    check(len(w.shortcuts) == 8, f"shortcuts back on entering ({len(w.shortcuts)})")
    press("4")
    check(ui.nextButton.isEnabled() and ui.score4Button.isChecked(), "key 4 saved the score, next enabled")
    press("Ctrl+Right")
    check(ui.progressLabel.text() == "Item 2 of 3 (1 answered)", ui.progressLabel.text())
    ui.score1Button.click()
    press("Ctrl+Right"); press("0")
    check(ui.progressLabel.text() == "Item 3 of 3 (3 answered)" and "All items answered" in ui.statusLabel.text(), ui.statusLabel.text())
    press("Ctrl+Left")
    check(ui.score1Button.isChecked(), "previous shows the saved score")
    ui.lungWindowButton.click(); ui.boneWindowButton.click(); press("5")
    lines = [json.loads(l) for l in open(glob.glob(str(root / "single/answers/*.jsonl"))[0])]
    check([l["score"] for l in lines] == [4, 1, 0, 5] and lines[-1]["revision"] == 1 and lines[-1]["window"]["width"] == 1000.0, str([(l["score"], l["window"]) for l in lines]))
    names = sorted(n.GetName() for n in [scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetItemAsObject(i) for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))])
    check(len(names) == 1 and names[0].startswith("Case "), str(names))
    ui.closeButton.click()
    check(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0 and ui.openButton.isEnabled(), "close removes nodes")

    # pair
    ui.studyDirectoryButton.directory = str(root / "pair"); w.onOpen()
    check(not errors and scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 2, f"pair open {errors}")
    press("Shift+B")
    check(ui.originalBButton.isChecked() and not ui.nextButton.isEnabled(), "B chosen, draft kept, not yet saved")
    for i, item in enumerate(mod.LIKERT_ITEMS):
        getattr(ui, f"{item}ASpinBox").setValue(3)
        check(ui.originalBButton.isChecked(), f"draft kept after rating {item} A")
        getattr(ui, f"{item}BSpinBox").setValue(4)
    check(ui.nextButton.isEnabled(), "pair saved once complete")
    press("Ctrl+Right")
    check(not ui.originalBButton.isChecked() and ui.noiseASpinBox.value() == 0, "form reset on the next item")
    press("Ctrl+Left")
    check(ui.originalBButton.isChecked() and ui.noiseBSpinBox.value() == 4, "previous restores the pair answer")
    ui.closeButton.click()
    # protocol
    ui.studyDirectoryButton.directory = str(root / "protocol"); w.onOpen()
    check(ui.kernelComboBox.count() == 5 and ui.doseComboBox.itemText(1) == "1", f"protocol choices {ui.kernelComboBox.count()} {ui.doseComboBox.itemText(1)}")
    ui.kernelComboBox.setCurrentIndex(3); ui.doseComboBox.setCurrentIndex(2)
    check(not ui.nextButton.isEnabled(), "incomplete protocol not saved")
    ui.thicknessComboBox.setCurrentIndex(2)
    check(ui.nextButton.isEnabled(), "protocol saved")
    line = json.loads(open(glob.glob(str(root / "protocol/answers/*.jsonl"))[0]).readline())
    check(line["protocol"] == "kernel=sharp,dose=0.25,thickness=2", line["protocol"])
    check(not errors, str(errors))
    # a save that fails on Close keeps the study open, says why, and leaves the panel in step
    save = w.logic.saveWindowIfChanged
    def broken():
        raise OSError("disk full")
    w.logic.saveWindowIfChanged = broken
    try:
        w.onClose()
    except OSError:
        pass
    check(w.logic.session is not None and ui.closeButton.isEnabled() and any("disk full" in e for e in errors),
          f"failed close keeps the study open {errors}")
    w.logic.saveWindowIfChanged = save
    errors.clear()
    w.onClose()
    check(w.logic.session is None and ui.openButton.isEnabled() and not errors, f"close after the failure {errors}")
    print("FAILED" if check.failed else "ALL OK")
    sys.exit(1 if check.failed else 0)


if __name__ == "__main__":
    _drive()
