"""Helpers of the CTNormalize Slicer module.

Everything but the ``panel_*`` modules (the Qt panel parts) and :mod:`.parameters` runs
without Qt widgets, so it is tested headless against real MRML (the ``slicer-core`` wheel).
``slicer`` is imported inside functions; ``qt`` only in the panel parts, the settings and the
thin timer adapter of :mod:`.process`.
"""

import importlib.util as _ilu
import sys as _sys
from pathlib import Path as _Path


def _candidate_roots():
    here = _Path(__file__).resolve().parent  # .../CTNormalizeSlicerLib
    # installed extension: qt-scripted-modules/{CTNormalizeLib, CTNormalizeSlicerLib, Resources}
    # source tree: <repo>/{CTNormalizeLib, Resources, CTNormalize/CTNormalizeSlicerLib}
    return [here.parent, here.parent.parent]


def resources_dir():
    """The folder holding ``UI/``, ``Icons/`` and the engine's ``Presets/`` (installed or source tree)."""
    for root in _candidate_roots():
        if (root / "Resources" / "UI").is_dir():
            return root / "Resources"
    return _candidate_roots()[0] / "Resources"


def ensure_engine_importable():
    """Put the folder holding ``CTNormalizeLib`` on ``sys.path`` when Python cannot find it.

    Needed when the module is used straight from the source tree (Additional module paths
    pointing at ``CTNormalize/``); an installed extension has the engine next to the module.
    Only a path lookup: nothing heavy is imported.
    """
    if _ilu.find_spec("CTNormalizeLib") is not None:
        return
    for root in _candidate_roots():
        if (root / "CTNormalizeLib" / "__init__.py").is_file():
            _sys.path.insert(0, str(root))
            return
