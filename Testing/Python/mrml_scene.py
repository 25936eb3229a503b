"""The headless MRML scene recipe (../shared/SLICER.md) shared by the Slicer Logic tests."""

import types

_KEEP_ALIVE = []  # the segmentations logic registers process-wide converter rules: keep one alive


def make_mrml_scene():
    """A real MRML scene with application, color, segmentation, volumes, layout and slice logics.

    Also sets ``slicer.mrmlScene`` and a minimal ``slicer.modules`` (volumes, segmentations),
    which ``slicer.util`` helpers reach for. Returns a namespace with ``scene``, ``app``,
    ``layout``, ``slice_logics``.

    No ``scene.Clear()`` afterwards: with slice logics attached it does not return in the
    slicer-core 5.13 wheel; make a fresh scene per test instead.
    """
    import slicer
    import vtk

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    colors = app.GetColorLogic()
    colors.SetMRMLScene(scene)
    colors.AddDefaultColorNodes()
    app.SetModuleLogic("Colors", colors)
    seg_logic = slicer.vtkSlicerSegmentationsModuleLogic()
    seg_logic.SetMRMLScene(scene)
    seg_logic.SetMRMLApplicationLogic(app)
    app.SetModuleLogic("Segmentations", seg_logic)
    _KEEP_ALIVE.append(seg_logic)
    # Slicer's application adds the axial/coronal/sagittal presets before any slice node exists.
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    layout = slicer.vtkMRMLLayoutLogic()
    layout.SetMRMLScene(scene)
    app.SetSliceLogics(vtk.vtkCollection())
    slice_logics = []
    for name in ("Red", "Yellow", "Green"):
        sl = slicer.vtkMRMLSliceLogic()
        sl.SetMRMLApplicationLogic(app)
        app.GetSliceLogics().AddItem(sl)
        sl.SetMRMLScene(scene)
        sl.SetSliceNode(scene.GetSingletonNode(name, "vtkMRMLSliceNode"))
        slice_logics.append(sl)
    volumes_logic = slicer.vtkSlicerVolumesLogic()
    volumes_logic.SetMRMLScene(scene)
    volumes_logic.SetMRMLApplicationLogic(app)
    app.SetModuleLogic("Volumes", volumes_logic)
    # The wheel has the logic classes but no module registry.
    slicer.modules = types.SimpleNamespace(volumes=types.SimpleNamespace(logic=lambda: volumes_logic),
                                           segmentations=types.SimpleNamespace(logic=lambda: seg_logic))
    return types.SimpleNamespace(scene=scene, app=app, layout=layout, slice_logics=slice_logics)
