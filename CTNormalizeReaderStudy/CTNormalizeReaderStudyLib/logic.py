"""Reading a blinded study in Slicer, without any Qt widget.

:class:`ReaderStudyLogic` is the base of ``CTNormalizeReaderStudyLogic``. It works on MRML
only (volume, display, storage, layout and slice composite nodes), so it runs inside Slicer
and headless against the ``slicer-core`` wheel. The study model is
:class:`CTNormalizeLib.readerstudy.ReaderSession`, which reads ``study.json``, the blinded
items and the reader's own answer file; the key is never opened here.

"""

from __future__ import annotations

import logging
from typing import Optional

try:  # Slicer's translation function; the string itself where slicer.i18n does not exist (slicer-core)
    from slicer.i18n import tr as _
except ImportError:
    def _(text: str) -> str:
        return text

log = logging.getLogger(__name__)

#: (window, level) in HU: Slicer's CT-Lung and CT-Bone presets, and the usual mediastinum window.
WINDOW_PRESETS = {"lung": (1400.0, -500.0), "mediastinum": (350.0, 40.0), "bone": (1000.0, 400.0)}
ONE_UP_RED_LAYOUT = 6  # vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView
SIDE_BY_SIDE_LAYOUT = 29  # vtkMRMLLayoutNode.SlicerLayoutSideBySideView
#: Slice view per side label: A left (Red), B right (Yellow).
SIDE_VIEWS = {"A": "Red", "B": "Yellow"}
#: Attribute that marks the nodes this logic loaded (neutral: no truth in it).
OWNER_ATTRIBUTE = "CTNormalizeReaderStudy.Item"


def _import_study_model():
    try:
        from CTNormalizeLib import readerstudy
    except ImportError:  # running from a source checkout: the repo root holds CTNormalizeLib
        import os
        import sys

        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        from CTNormalizeLib import readerstudy
    return readerstudy


class ReaderStudyLogic:
    """One reader reading one study in a scene.

    Parameters
    ----------
    scene : vtkMRMLScene, optional
        Defaults to ``slicer.mrmlScene``.
    appLogic : vtkMRMLApplicationLogic, optional
        Used to fit the slice views; defaults to ``slicer.app.applicationLogic()`` when there is one.
    """

    def __init__(self, scene=None, appLogic=None):
        self._scene = scene
        self._appLogic = appLogic
        self.session = None
        self.nodes: dict = {}  # side -> volume node of the current item
        self._timer = None
        self._savedWindow: Optional[dict] = None

    # -- environment -------------------------------------------------------------------------
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

    # -- study ---------------------------------------------------------------------------------
    def openStudy(self, studyDir: str, reader: str):
        """Open ``studyDir`` for ``reader`` and load the first unanswered item.

        Returns the :class:`ReaderSession`. Raises ``CTNormalizeError`` subclasses with a
        sentence for the user (not a study, unknown reader in a per-reader study...).
        """
        rs = _import_study_model()
        self.closeStudy()
        self.session = rs.ReaderSession(studyDir, (reader or "").strip())
        self._timer = rs.answers.ItemTimer()
        self.loadItem(self.session.index)
        return self.session

    def closeStudy(self):
        """Remove the current item's nodes and forget the session (answers are on disk already)."""
        self.clearItem()
        self.session = None

    @property
    def design(self) -> Optional[str]:
        return self.session.design if self.session else None

    def progressText(self) -> str:
        """"Item k of N (m answered)"."""
        if not self.session:
            return ""
        s = self.session
        return _("Item {index} of {n} ({answered} answered)").format(index=s.index + 1, n=s.n, answered=s.n_answered)

    # -- loading -------------------------------------------------------------------------------
    def clearItem(self):
        """Remove the nodes of the current item (and any this logic left in the scene)."""
        scene = self.scene
        doomed = list(self.nodes.values())
        for node in _nodes_of_class(scene, "vtkMRMLScalarVolumeNode"):
            if node.GetAttribute(OWNER_ATTRIBUTE) is not None and node not in doomed:
                doomed.append(node)
        for node in doomed:
            if node is not None and node.GetScene() is not None:
                for i in range(node.GetNumberOfDisplayNodes()):
                    dn = node.GetNthDisplayNode(i)
                    if dn is not None and dn.GetScene() is not None:
                        scene.RemoveNode(dn)
                scene.RemoveNode(node)
        self.nodes = {}

    def loadItem(self, k: Optional[int] = None) -> dict:
        """Show item ``k`` (default: the current one): neutral nodes, layout, window.

        Returns side -> volume node. The previous item's nodes are removed first.
        """
        if not self.session:
            raise RuntimeError("Open a study first.")
        if k is not None:
            self.session.go(k)
        item = self.session.item()
        self.clearItem()
        import slicer

        scene = self.scene
        for side, path in item["paths"].items():
            name = (item.get("labels") or {}).get(side) or f"Case {item['case']} {side}"
            node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
            storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
            storage.SetFileName(path)
            ok = storage.ReadData(node)
            if not ok:
                scene.RemoveNode(node)
                self.clearItem()
                raise RuntimeError(f"Cannot read the blinded image of {name}.")
            node.SetName(name)  # reading must not rename it after the file
            _strip_attributes(node)
            node.SetAttribute(OWNER_ATTRIBUTE, "1")
            node.CreateDefaultDisplayNodes()
            _flatten_subject_hierarchy(scene, node)
            self.nodes[side] = node
        previous = self.session.answer()
        window = (previous or {}).get("window") or self.session.study.get("window") or {}
        self.setWindowLevel(window.get("width", WINDOW_PRESETS["lung"][0]), window.get("level", WINDOW_PRESETS["lung"][1]))
        self._savedWindow = (previous or {}).get("window")
        self._showInViews()
        if self._timer is not None:
            self._timer.restart()
        return dict(self.nodes)

    def _showInViews(self):
        import slicer

        scene = self.scene
        layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
        sides = sorted(self.nodes)
        if layout is not None:
            layout.SetViewArrangement(SIDE_BY_SIDE_LAYOUT if len(sides) > 1 else ONE_UP_RED_LAYOUT)
        for side in ("A", "B"):
            view = SIDE_VIEWS[side]
            # (sliceNode) overload: the (scene, name) one is missing from the slicer-core wheel.
            sliceNode = scene.GetSingletonNode(view, "vtkMRMLSliceNode")
            comp = slicer.vtkMRMLSliceLogic.GetSliceCompositeNode(sliceNode) if sliceNode is not None else None
            if comp is None:
                continue
            node = self.nodes.get(side)
            comp.SetBackgroundVolumeID(node.GetID() if node is not None else None)
            comp.SetForegroundVolumeID(None)
            comp.SetLabelVolumeID(None)
            comp.SetLinkedControl(len(sides) > 1)
            comp.SetHotLinkedControl(len(sides) > 1)
            if node is not None:
                sliceNode.SetOrientation("Axial")
        app = self.appLogic
        if app is not None:
            app.FitSliceToAll()

    # -- window / level --------------------------------------------------------------------------
    def setWindowLevel(self, width: float, level: float):
        """Apply a fixed window/level to every shown volume."""
        for node in self.nodes.values():
            dn = node.GetDisplayNode()
            if dn is None:
                node.CreateDefaultDisplayNodes()
                dn = node.GetDisplayNode()
            dn.AutoWindowLevelOff()
            dn.SetWindowLevel(float(width), float(level))

    def applyWindowPreset(self, preset: str):
        """``lung`` (1400/-500), ``mediastinum`` (350/40) or ``bone`` (1000/400), as in WINDOW_PRESETS."""
        if preset not in WINDOW_PRESETS:
            raise ValueError(f"Unknown window preset {preset!r}; known: {', '.join(WINDOW_PRESETS)}.")
        self.setWindowLevel(*WINDOW_PRESETS[preset])

    def currentWindow(self) -> Optional[dict]:
        """The window/level the reader sees now (of side A), as ``{"width", "level"}``."""
        node = self.nodes.get("A") or next(iter(self.nodes.values()), None)
        dn = node.GetDisplayNode() if node is not None else None
        if dn is None:
            return None
        return {"width": float(dn.GetWindow()), "level": float(dn.GetLevel())}

    # -- answers ---------------------------------------------------------------------------------
    def isAnswerComplete(self, answer: dict) -> bool:
        """True when ``answer`` holds every required field of the design, in range."""
        rs = _import_study_model()
        if not self.session:
            return False
        from CTNormalizeLib.errors import BadInputError

        try:
            rs.design.validate_answer(self.design, answer, views=list(self.session.item()["views"]),
                                      choices=(self.session.study.get("questions") or {}).get("protocol"))
        except (BadInputError, ValueError, KeyError, TypeError):
            return False  # incomplete or out of range; a missing package (ImportError) is not swallowed
        return True

    def recordAnswer(self, answer: dict) -> dict:
        """Save ``answer`` for the current item at once (appended, fsynced) and return the line.

        The line carries the time spent on the item and the window/level the reader ended on.
        """
        if not self.session:
            raise RuntimeError("Open a study first.")
        window = self.currentWindow()
        spent = self._timer.elapsed() if self._timer is not None else None
        line = self.session.record(answer, time_spent_s=spent, window=window)
        self._savedWindow = line.get("window")
        return line

    def saveWindowIfChanged(self) -> Optional[dict]:
        """If the item is answered and the window changed since, record the answer again.

        Called before leaving an item so the final window/level is the one recorded.
        """
        if not self.session:
            return None
        previous = self.session.answer()
        window = self.currentWindow()
        if previous is None or window is None or window == self._savedWindow:
            return None
        rs = _import_study_model()
        fields = rs.design.required_fields(self.design)
        answer = {f: previous[f] for f in fields if f in previous}
        return self.recordAnswer(answer)

    def currentAnswer(self) -> Optional[dict]:
        """The newest saved answer of the current item, or None."""
        return self.session.answer() if self.session else None

    def canGoNext(self) -> bool:
        return bool(self.session) and self.session.answer() is not None and self.session.index + 1 < self.session.n

    def canGoPrevious(self) -> bool:
        return bool(self.session) and self.session.index > 0

    def next(self) -> dict:
        """Go to the next item (only once the current one is answered)."""
        if not self.canGoNext():
            raise RuntimeError("Answer this item before moving on.")
        self.saveWindowIfChanged()
        return self.loadItem(self.session.index + 1)

    def previous(self) -> dict:
        """Go back one item to revise it."""
        if not self.canGoPrevious():
            raise RuntimeError("This is the first item.")
        self.saveWindowIfChanged()
        return self.loadItem(self.session.index - 1)


def _nodes_of_class(scene, className: str) -> list:
    out = []
    col = scene.GetNodesByClass(className)
    for i in range(col.GetNumberOfItems()):
        out.append(col.GetItemAsObject(i))
    return out


def _strip_attributes(node):
    names = node.GetAttributeNames() or ()
    for name in list(names):
        node.RemoveAttribute(name)


def _flatten_subject_hierarchy(scene, node):
    """Keep the node's subject-hierarchy item directly under the scene, with no attributes."""
    import slicer

    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if sh is None:
        return
    item = sh.GetItemByDataNode(node)
    if not item:  # headless (no subject-hierarchy plugin logic): make the plain item ourselves
        item = sh.CreateItem(sh.GetSceneItemID(), node)
    if sh.GetItemParent(item) != sh.GetSceneItemID():
        sh.SetItemParent(item, sh.GetSceneItemID())
    for name in list(sh.GetItemAttributeNames(item) or ()):
        sh.RemoveItemAttribute(item, name)
