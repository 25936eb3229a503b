"""The test environment itself: a missing optional piece must fail loudly, not skip a test file silently."""

import os

import pytest


@pytest.mark.skipif(os.environ.get("CTNORMALIZE_NO_SLICER") == "1", reason="CTNORMALIZE_NO_SLICER=1 set by the user")
def test_slicer_core_and_pyside6_installed():
    """The Slicer Logic and reader-study Widget tests skip without these; the set-up installs both."""
    import slicer  # noqa: F401

    assert hasattr(slicer, "vtkMRMLScene"), "the installed 'slicer' package is not slicer-core"
    import PySide6  # noqa: F401


def test_engine_never_imports_slicer():
    import subprocess
    import sys

    code = ("import sys, CTNormalizeLib, CTNormalizeLib.cli.main as m; m.build_parser(); "
            "import CTNormalizeLib.normalization, CTNormalizeLib.readerstudy, CTNormalizeLib.quantify, "
            "CTNormalizeLib.evaluate, CTNormalizeLib.inference, CTNormalizeLib.models.registry; "
            "print('slicer' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False", "CTNormalizeLib imported slicer"
