"""First-use dependency installs inside Slicer: never at import, always after asking.

- torch only through the PyTorch extension (``PyTorchUtils``), which picks the right CUDA or
  CPU build; a declined install stops with a message.
- Everything else with a constraints file that pins the numpy, scipy and SimpleITK Slicer
  ships (and the installed torch), so no install replaces them: ``slicer.packaging.pip_ensure``
  on Slicer >= 5.12, a confirmation, a progress dialog and ``slicer.util.pip_install`` on 5.10,
  then a restart prompt when a package already imported in this session was updated.
- pyradiomics from the SlicerRadiomics extension when it is installed, else a wheel-only
  install that fails with a clear message instead of compiling C extensions.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from typing import Iterable, Optional

from .i18n import _

#: import name -> pip requirement. Slicer 5.10+ bundles numpy, scipy, pydicom, SimpleITK, vtk
#: and requests (SuperBuild/External_python-*.cmake): they are never listed, pip never touches them.
ENGINE_REQUIREMENTS = {
    "skimage": "scikit-image>=0.21",
    "yaml": "pyyaml>=6",
    "tqdm": "tqdm>=4.60",
    "safetensors": "safetensors>=0.4",
    "psutil": "psutil>=5.9",
}
MODEL_REQUIREMENTS = {"monai": "monai>=1.3"}
RADIOMICS_REQUIREMENTS = {"radiomics": "pyradiomics-bhklab>=3.1.4", "slicerio": "slicerio>=1.0"}
#: Distributions pinned to the installed version in every install's constraints.
PINNED = ("numpy", "scipy", "SimpleITK", "torch", "vtk")
TORCH_REQUIREMENT = ">=2.1"
RADIOMICS_EXTENSION = "SlicerRadiomics"


class DependencyError(RuntimeError):
    """A package is missing and was not installed (declined, or no build for this platform)."""


def missing(requirements: dict) -> list[str]:
    """The pip requirements whose import name cannot be found."""
    return [req for name, req in requirements.items() if importlib.util.find_spec(name) is None]


def torch_installed() -> bool:
    """True when torch can be imported (checked without importing it)."""
    return importlib.util.find_spec("torch") is not None


def model_dependencies_installed() -> bool:
    """True when a learned model could run now: torch and :data:`MODEL_REQUIREMENTS` importable."""
    return torch_installed() and not missing(MODEL_REQUIREMENTS)


def constraints_text() -> str:
    """``name==version`` for every installed package of :data:`PINNED`."""
    from importlib import metadata

    lines = []
    for dist in PINNED:
        try:
            lines.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return "\n".join(lines) + "\n"


def write_constraints(folder: Optional[str] = None) -> str:
    fd, path = tempfile.mkstemp(prefix="CTNormalize-constraints-", suffix=".txt", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(constraints_text())
    return path


def ensure_torch(ask: bool = True) -> None:
    """Install torch through the PyTorch extension if missing; raise DependencyError if it is not."""
    if torch_installed():
        return
    try:
        import PyTorchUtils
    except ImportError:
        raise DependencyError(_(
            "PyTorch is needed for learned models. Install the 'PyTorch' extension from the Extensions Manager, "
            "restart Slicer, and try again (or choose a classical method).")) from None
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=ask, torchVersionRequirement=TORCH_REQUIREMENT)
    if torch is None:
        raise DependencyError(_("PyTorch was not installed, so the learned model cannot run. "
                                "Choose a classical method, or press Apply again to install PyTorch."))


def radiomics_extension_installed() -> bool:
    import slicer

    model = getattr(getattr(slicer, "app", None), "extensionsManagerModel", lambda: None)()
    return bool(model is not None and model.isExtensionInstalled(RADIOMICS_EXTENSION))


def ensure_radiomics(requester: str = "CTNormalize") -> None:
    """pyradiomics from the SlicerRadiomics extension, else a wheel-only install; slicerio too."""
    if importlib.util.find_spec("radiomics") is None:
        if radiomics_extension_installed():
            raise DependencyError(_("The SlicerRadiomics extension is installed but its pyradiomics cannot be "
                                    "imported yet. Restart Slicer and try again."))
        try:
            ensure([{"radiomics": RADIOMICS_REQUIREMENTS["radiomics"]}], requester, extra_args=["--only-binary=:all:"])
        except DependencyError:
            raise
        except Exception:
            raise DependencyError(_(
                "No ready-made pyradiomics package exists for this computer's Python, and CT Normalize does not "
                "compile one. Install the 'SlicerRadiomics' extension from the Extensions Manager (it ships "
                "pyradiomics), restart Slicer, and try again.")) from None
    ensure([{"slicerio": RADIOMICS_REQUIREMENTS["slicerio"]}], requester)


def ensure(requirement_sets: Iterable[dict], requester: str = "CTNormalize", extra_args: Iterable[str] = ()) -> None:
    """Install the missing packages of the sets, after asking; raise DependencyError when declined."""
    import slicer

    needed = []
    for reqs in requirement_sets:
        needed += [r for r in missing(reqs) if r not in needed]
    if not needed:
        return
    constraints = write_constraints()
    try:
        packaging = _packaging(slicer)
        if packaging is not None and not extra_args:
            try:
                packaging.pip_ensure(needed, constraints=constraints, requester=requester)
            except RuntimeError as exc:  # pip_ensure raises RuntimeError when the user declines
                raise DependencyError(str(exc)) from None
            return
        _install_5_10(slicer, needed, constraints, requester, list(extra_args))
    finally:
        os.remove(constraints)


def _packaging(slicer):
    try:
        import slicer.packaging as packaging  # Slicer >= 5.12
    except ImportError:
        return None
    return packaging if hasattr(packaging, "pip_ensure") else None


def _install_5_10(slicer, needed: list, constraints: str, requester: str, extra_args: list) -> None:
    text = _("{requester} needs these Python packages, which are not installed yet:\n\n  {packages}\n\nInstall them "
             "now? This takes a minute or two. Slicer's own numpy, scipy and SimpleITK stay as they are.").format(
                 requester=requester, packages="\n  ".join(needed))
    if not slicer.util.confirmOkCancelDisplay(text, windowTitle=requester):
        raise DependencyError(_("Installation declined: {packages} are required.").format(packages=", ".join(needed)))
    already = [n for n in needed if _import_name(n) in sys.modules]
    dialog = None
    try:
        dialog = slicer.util.createProgressDialog(labelText="Installing " + ", ".join(needed) + "...",
                                                  maximum=0, windowTitle=requester)
        slicer.app.processEvents()
    except Exception:  # no GUI (PythonSlicer): install without a dialog
        dialog = None
    try:
        slicer.util.pip_install(extra_args + needed + ["-c", constraints])
    finally:
        if dialog is not None:
            dialog.close()
    if already and slicer.util.confirmYesNoDisplay(
            "Packages already in use were updated (" + ", ".join(already) + "). Restart Slicer now to use them?",
            windowTitle=requester):
        slicer.util.restart()


def _import_name(requirement: str) -> str:
    name = requirement.split(">")[0].split("=")[0].split("<")[0].strip().lower()
    for table in (ENGINE_REQUIREMENTS, MODEL_REQUIREMENTS, RADIOMICS_REQUIREMENTS):
        for module, req in table.items():
            if req.lower().startswith(name):
                return module
    return name.replace("-", "_")
