"""Command lines for the CTNormalize engine (``python -m CTNormalizeLib ...``)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import Optional

from .i18n import _


def engine_package_parent() -> str:
    """The folder that holds the ``CTNormalizeLib`` package.

    In a Slicer install it sits next to ``CTNormalize.py`` in ``qt-scripted-modules``; in the
    source tree it is the repository root. The child gets it as working directory and on
    ``PYTHONPATH`` so ``-m CTNormalizeLib`` resolves to the same engine the module ships.
    """
    spec = importlib.util.find_spec("CTNormalizeLib")
    if spec is not None and spec.origin:
        return str(Path(spec.origin).resolve().parent.parent)
    here = Path(__file__).resolve().parent
    for candidate in (here.parent, here.parent.parent):
        if (candidate / "CTNormalizeLib" / "__init__.py").is_file():
            return str(candidate)
    raise FileNotFoundError(_("The CTNormalizeLib engine package was not found next to the CTNormalize module."))


def python_executable() -> str:
    """Slicer's Python (``PythonSlicer``) inside Slicer, else the running interpreter."""
    try:
        import slicer

        in_slicer = getattr(slicer, "app", None) is not None
    except ImportError:
        in_slicer = False
    if in_slicer:
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


def engine_environment(device: str = "auto", models_dir: Optional[str] = None) -> dict:
    """Extra environment for the child: engine on PYTHONPATH, CPU forced when asked, user models folder."""
    parent = engine_package_parent()
    paths = [parent] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), "PYTHONUNBUFFERED": "1",
           "PYTHONIOENCODING": "utf-8"}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    if device == "mps":
        env["PYTORCH_ENABLE_MPS_FALLBACK"] = "1"  # operators MPS lacks run on the CPU instead of failing
    if models_dir:
        env["CTNORMALIZE_MODELS"] = str(models_dir)
    return env


def supported_devices() -> tuple:
    """The ``--device`` choices of the engine's normalize command (e.g. auto, cpu, cuda)."""
    import argparse

    from CTNormalizeLib.cli import cmd_normalize

    parser = argparse.ArgumentParser()
    cmd_normalize.add_arguments(parser)
    for action in parser._actions:  # argparse keeps no public list of an option's choices
        if "--device" in action.option_strings:
            if action.choices:
                return tuple(action.choices)
            # a free-form option: the names its help lists (e.g. "auto, cpu, cuda, cuda:N, gpu or mps")
            import re

            return tuple(re.findall(r"[a-z]+(?::N)?", (action.help or "").split("(")[0].replace(" or ", ", ")))
    return ("auto", "cpu")


def engine_command(subcommand: str, *args: str, python: Optional[str] = None) -> list[str]:
    """``[python, -m, CTNormalizeLib, subcommand, *args]``."""
    return [python or python_executable(), "-m", "CTNormalizeLib", subcommand, *[str(a) for a in args]]


def normalize_command(input_path: str, output_path: str, source: str = "auto", target: str = "",
                      method: str = "auto", device: str = "auto", python: Optional[str] = None,
                      report_path: Optional[str] = None, target_like: Optional[str] = None) -> list[str]:
    """The ``normalize`` command line of DESIGN.md section 4, with ``--progress json``.

    ``target_like``: a reference scan's file, whose measured signature is the target
    (``--target-like``); ``target`` may then be empty.
    """
    args = [input_path, "-o", output_path, "--source", source or "auto"]
    if target or not target_like:
        args += ["--target", target]
    if target_like:
        args += ["--target-like", target_like]
    args += ["--method", method or "auto", "--device", device or "auto", "--progress", "json"]
    if report_path:
        args += ["--report", report_path]
    return engine_command("normalize", *args, python=python)
