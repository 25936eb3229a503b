"""The module's self-test inside Slicer: the panel's flow on the simulated sample, without network."""

from __future__ import annotations

import time


def _wait(test, run, timeout=900):
    import slicer

    from .process import RunState

    t0 = time.monotonic()
    while not (run.poll().finished or run.state is RunState.IMPORT_RESULTS):
        slicer.app.processEvents()
        time.sleep(0.05)
        test.assertLess(time.monotonic() - t0, timeout, "the engine took too long")
    return run.state


def run(test, logic, cache_folder: str) -> None:
    """Sample → Apply on the defaults → compare → radiomics, emphysema → clean scene."""
    import numpy as np
    import slicer

    from . import nodes, sampledata, segments, tables, views
    from .process import RunState

    test.delayDisplay("Simulated sample (made locally)")
    volume = sampledata.load_simulated_chest(slicer.mrmlScene, folder=cache_folder)
    before = slicer.util.arrayFromVolume(volume).copy()

    test.delayDisplay("Normalizing on the defaults in the background")
    r = logic.startNormalization(volume, "emphysema-reference", device="cpu")
    test.assertEqual(_wait(test, r), RunState.COMPLETED, r.error_message)
    out = r.outputNode
    test.assertEqual(out.GetName(), f"{volume.GetName()} \u2192 emphysema-reference")
    test.assertEqual(nodes.provenance(out)["runId"], r.id)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), before)

    test.delayDisplay("Compare views")
    logic.compare(volume, out, layout="sideBySide")
    red = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceCompositeNode()
    yellow = slicer.app.layoutManager().sliceWidget("Yellow").mrmlSliceCompositeNode()
    test.assertEqual(red.GetBackgroundVolumeID(), volume.GetID())
    test.assertEqual(yellow.GetBackgroundVolumeID(), out.GetID())
    test.assertTrue(red.GetLinkedControl() and yellow.GetHotLinkedControl())
    test.assertAlmostEqual(out.GetDisplayNode().GetWindow(), views.WINDOW_PRESETS["lung"][0])

    test.delayDisplay("Radiomics and emphysema")
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "test segments")
    seg.CreateDefaultDisplayNodes()
    seg.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    box = np.zeros(before.shape, np.uint8)
    z, y, x = (s // 2 for s in before.shape)
    box[z - 3:z + 3, y - 15:y + 15, x - 15:x + 15] = 1
    sid = seg.GetSegmentation().AddEmptySegment("", "box")
    slicer.util.updateSegmentBinaryLabelmapFromArray(box, seg, sid, volume)
    n_nodes = slicer.mrmlScene.GetNumberOfNodes()
    rad = logic.startRadiomics(volume, out, seg, [sid])
    test.assertEqual(_wait(test, rad), RunState.COMPLETED, rad.error_message)
    test.assertEqual(tables.column_names(rad.tableNode)[:5],
                     ["segment", "feature", "original", "normalized", "difference", "% difference"])
    emph = logic.startEmphysema(volume, out)
    test.assertEqual(_wait(test, emph), RunState.COMPLETED, emph.error_message)
    test.assertEqual(len(emph.maskSegmentationNodes), 2)
    # two tables, two segmentations with one display node each: no orphan nodes
    test.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), n_nodes + 6)
    logic.showResults(emph.tableNode)
    test.assertEqual(segments.all_segment_ids(seg), [sid])
    test.delayDisplay("Test passed")
