"""Locate the Resources folder from the source tree, a Slicer install or a wheel."""

from __future__ import annotations

import os
from pathlib import Path


def resources_dir() -> Path:
    """Return the ``Resources`` directory.

    Looks, in order, at ``$CTNORMALIZE_RESOURCES``, the folder next to the package
    (source tree and Slicer install, where CTNormalizeLib sits beside the module's
    ``Resources``), and the copy packaged inside the wheel (``CTNormalizeLib/_resources``).
    """
    env = os.environ.get("CTNORMALIZE_RESOURCES")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent
    candidates += [here.parent / "Resources", here / "_resources"]
    for c in candidates:
        if (c / "Presets").is_dir():
            return c
    raise FileNotFoundError(
        "CTNormalize resources not found; looked in: " + ", ".join(str(c) for c in candidates)
    )


def resource_path(*parts: str) -> Path:
    """Path of a file under Resources (e.g. ``resource_path("Presets", "targets.yaml")``)."""
    return resources_dir().joinpath(*parts)
