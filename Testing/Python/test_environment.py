"""The test environment itself: a missing optional piece must fail loudly, not skip a test file silently."""

import os

import pytest


@pytest.mark.skipif(os.environ.get("CTNORMALIZE_NO_SLICER") == "1", reason="CTNORMALIZE_NO_SLICER=1 set by the user")
def test_slicer_core_and_pyside6_installed():
    """The Slicer Logic and reader-study Widget tests skip without these; the set-up installs both."""
    import slicer  # noqa: F401

    assert hasattr(slicer, "vtkMRMLScene"), "the installed 'slicer' package is not slicer-core"
    import PySide6  # noqa: F401


def test_engine_imports_neither_slicer_nor_heavy_libraries():
    import subprocess
    import sys

    code = ("import sys, CTNormalizeLib, CTNormalizeLib.cli.main as m; m.build_parser(); "
            "import CTNormalizeLib.normalization, CTNormalizeLib.readerstudy, CTNormalizeLib.quantify, "
            "CTNormalizeLib.evaluate, CTNormalizeLib.inference, CTNormalizeLib.models.registry; "
            "print(*(m in sys.modules for m in ('slicer', 'torch', 'monai', 'radiomics')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False", "CTNormalizeLib imported slicer"
    # heavy libraries load inside the functions that need them, so `ctnormalize --help` stays fast
    assert out[1:] == ["False", "False", "False"], dict(zip(("torch", "monai", "radiomics"), out[1:]))
