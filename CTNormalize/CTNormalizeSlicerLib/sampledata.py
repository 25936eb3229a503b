"""Sample data for trying the module at once: a simulated sharp-kernel low-dose chest CT
(generated on this computer by the engine's simulator, nothing downloaded) and Slicer's CTChest.

The simulated scan carries its acquisition in node attributes ``DICOM.<TagName>`` (kernel,
thickness, manufacturer), which the module passes to the engine like DICOM tags.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

CATEGORY = "CTNormalize"
SIMULATED_NAME = "CTNormalize simulated chest (sharp, 25% dose)"
SIMULATED_NODE = "SimulatedChestSharpLowDose"
SIMULATED_PROTOCOL = "kernel=sharp,dose=0.25,thickness=2"
SIMULATED_SEED = 7
SIMULATED_SHAPE = (64, 192, 192)
SIMULATED_SPACING = (1.0, 1.0, 1.0)
#: Slicer's CTChest sample (SampleData.py, TESTING_DATA_URL + SHA256/<digest>).
CTCHEST_SHA256 = "4507b664690840abb6cb9af2d919377ffc4ef75b167cb6fd0f747befdb12e38e"
CTCHEST_URL = "https://github.com/Slicer/SlicerTestingData/releases/download/SHA256/" + CTCHEST_SHA256


def cache_dir() -> Path:
    try:
        import slicer

        root = Path(slicer.app.cachePath)
    except (ImportError, AttributeError):
        root = Path(os.environ.get("CTNORMALIZE_CACHE", Path.home() / ".cache" / "ctnormalize"))
    return root / "CTNormalize"


def simulated_chest(folder: Optional[Path] = None) -> Path:
    """The simulated chest scan (NRRD with its tags in the header), generated once and cached."""
    from CTNormalizeLib.io import write_volume
    from CTNormalizeLib.protocols import parse_spec
    from CTNormalizeLib.simulate import make_phantom, simulate_scan

    folder = Path(folder or cache_dir())
    path = folder / f"{SIMULATED_NODE}-seed{SIMULATED_SEED}.nrrd"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    phantom = make_phantom(SIMULATED_SEED, shape=SIMULATED_SHAPE, spacing=SIMULATED_SPACING, emphysema=0.1)
    scan = simulate_scan(phantom.volume, parse_spec(SIMULATED_PROTOCOL), seed=0)
    write_volume(scan, path, write_tags=True)
    return path


def load_simulated_chest(scene=None, folder: Optional[Path] = None):
    """Generate (once) and load the simulated chest; returns the volume node."""
    import SimpleITK as sitk
    import slicer

    from . import nodes, tags

    scene = scene or slicer.mrmlScene
    path = simulated_chest(folder)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", SIMULATED_NODE)
    nodes.read_volume(str(path), node)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    for name in tags.DICOM_TAGS:
        if reader.HasMetaDataKey(name):
            node.SetAttribute(tags.NODE_ATTRIBUTE_PREFIX + name, reader.GetMetaData(name))
    return node


def register(icons_dir: Optional[str] = None) -> None:
    """Add both samples to the Sample Data module (call on ``startupCompleted``)."""
    import SampleData
    import slicer
    from slicer.i18n import tr as _

    icons = Path(icons_dir) if icons_dir else None

    def thumbnail(name):
        p = icons / name if icons else None
        return str(p) if p is not None and p.is_file() else None

    def generate(source=None):
        from . import dependencies

        with slicer.util.tryWithErrorDisplay(_("Could not make the simulated chest CT."), waitCursor=True):
            # the engine's simulator runs in Slicer's Python here: its packages first (asked, as for a run)
            dependencies.ensure([dependencies.ENGINE_REQUIREMENTS], requester="CTNormalize")
            node = load_simulated_chest()
            slicer.util.setSliceViewerLayers(background=node, fit=True)

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category=CATEGORY, sampleName=SIMULATED_NAME, thumbnailFileName=thumbnail("SampleSimulatedChest.png"),
        uris=[], fileNames=[], nodeNames=[], customDownloader=generate)
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category=CATEGORY, sampleName="CTChest", thumbnailFileName=thumbnail("SampleCTChest.png"),
        uris=CTCHEST_URL, fileNames="CT-chest.nrrd", nodeNames="CTChest", checksums=f"SHA256:{CTCHEST_SHA256}",
        loadFileTypes="VolumeFile")
