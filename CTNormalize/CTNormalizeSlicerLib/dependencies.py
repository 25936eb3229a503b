"""First-use dependency check inside Slicer: never at import, always after asking.

torch comes through the PyTorch extension (``PyTorchUtils``), which picks the right CUDA
build for the machine; everything else through ``slicer.packaging.pip_ensure`` (Slicer >=
5.12) or ``slicer.util.pip_install`` after a confirmation (5.10). Packages Slicer bundles
(numpy, SimpleITK, vtk, requests) are never listed here, so they are never reinstalled.
"""

from __future__ import annotations

import importlib.util
from typing import Iterable

#: import name -> pip requirement, for the engine (normalize, info, protocols) and the
#: module's cancel (psutil). Slicer 5.10+ bundles numpy, scipy, pydicom, SimpleITK, vtk and
#: requests (SuperBuild/External_python-*.cmake), so they are not listed: pip never touches them.
ENGINE_REQUIREMENTS = {
    "skimage": "scikit-image>=0.21",
    "yaml": "pyyaml>=6",
    "tqdm": "tqdm>=4.60",
    "safetensors": "safetensors>=0.4",
    "psutil": "psutil>=5.9",
}
#: extra packages for learned models (besides torch).
MODEL_REQUIREMENTS = {"monai": "monai>=1.3"}
#: extra packages for radiomics.
RADIOMICS_REQUIREMENTS = {"radiomics": "pyradiomics-bhklab>=3.1.4", "slicerio": "slicerio>=1.0"}
TORCH_REQUIREMENT = ">=2.1"


def missing(requirements: dict) -> list[str]:
    """The pip requirements whose import name cannot be found."""
    return [req for name, req in requirements.items() if importlib.util.find_spec(name) is None]


def torch_installed() -> bool:
    """True when torch can be imported (checked without importing it)."""
    return importlib.util.find_spec("torch") is not None


def ensure_torch(ask: bool = True) -> bool:
    """Install torch through the PyTorch extension if missing; returns True when available."""
    if torch_installed():
        return True
    try:
        import PyTorchUtils
    except ImportError:
        raise RuntimeError(
            "PyTorch is needed for learned models. Install the 'PyTorch' extension from the "
            "Extensions Manager, restart Slicer, and try again (or choose a classical method)."
        ) from None
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=ask,
                                                         torchVersionRequirement=TORCH_REQUIREMENT)
    return torch is not None


def ensure(requirement_sets: Iterable[dict], requester: str = "CTNormalize") -> None:
    """Make sure the listed packages are installed, asking the user first.

    Raises RuntimeError when the user declines.
    """
    import slicer

    needed = []
    for reqs in requirement_sets:
        needed += [r for r in missing(reqs) if r not in needed]
    if not needed:
        return
    packaging = getattr(slicer, "packaging", None)
    if packaging is None:
        try:
            import slicer.packaging as packaging  # Slicer >= 5.12
        except ImportError:
            packaging = None
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        packaging.pip_ensure(needed, requester=requester)
        return
    text = ("CTNormalize needs these Python packages, which are not installed yet:\n\n  "
            + "\n  ".join(needed) + "\n\nInstall them now? This takes a minute or two.")
    if not slicer.util.confirmOkCancelDisplay(text, windowTitle=requester):
        raise RuntimeError("Installation declined: " + ", ".join(needed) + " are required.")
    slicer.util.pip_install(needed)
