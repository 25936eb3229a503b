"""Helpers of the reliability suite (``test_reliability_*.py``): small inputs, one CLI runner,
input snapshots and a check for partial or stale outputs.

Every case of the suite runs a command as a user would, then asserts four things: the exit
code, the message, that every input is byte-identical afterwards, and that no partial or
stale output (a temp or staging file, a half-written output) is left. :func:`check_case`
does all four.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[2]
SRC = "kernel=sharp,dose=1,thickness=2"
TGT = "kernel=smooth,dose=1,thickness=2"
#: The fastest normalize run (no model, no torch import): mtf_ratio between two kernels.
FAST = ["--source", SRC, "--target", TGT, "--method", "mtf_ratio", "--progress", "none"]


def chest(shape=(12, 64, 64), seed=0) -> np.ndarray:
    """A crude noisy chest in HU: air, an elliptic body, two lungs at -860 HU."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    cy, cx = shape[1] / 2, shape[2] / 2
    body = ((y - cy) / (0.42 * shape[1])) ** 2 + ((x - cx) / (0.46 * shape[2])) ** 2 < 1
    vol = np.full(shape, -1000.0)
    vol[body] = 40.0
    for side in (-1, 1):
        lung = ((y - cy) / (0.28 * shape[1])) ** 2 + ((x - cx - side * 0.2 * shape[2]) / (0.15 * shape[2])) ** 2 < 1
        vol[lung] = -860.0
    return (vol + rng.normal(0, 30, shape)).astype(np.float32)


def write_image(path: Path, arr: np.ndarray, spacing=(0.8, 0.8, 2.0), compress: bool = True) -> Path:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path), compress)
    return path


def snapshot(*paths) -> dict:
    """sha256 of every file under ``paths`` (files or folders), to compare before and after."""
    out = {}
    for p in paths:
        p = Path(p)
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest() if f.exists() else None
    return out


def leftovers(*folders) -> list:
    """Temp, staging or probe entries left anywhere under ``folders``."""
    bad = []
    for folder in folders:
        for f in Path(folder).rglob("*"):
            if f.name.startswith(".ctnormalize-") or ".tmp-" in f.name:
                bad.append(str(f))
    return bad


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``ctnormalize ARGS`` in this process; returns (exit code, stdout, stderr)."""
    from CTNormalizeLib.cli.main import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def cli_process(*args, preexec_fn=None, timeout=120, **kw) -> subprocess.CompletedProcess:
    """Run ``ctnormalize ARGS`` in a child process (for signals, pipes and resource limits)."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "CTNormalizeLib", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, preexec_fn=preexec_fn, **kw)


def check_case(code: int, err: str, expect_code: int, words, before: dict, folders=(), absent=()):
    """The four assertions of every reliability case.

    Parameters
    ----------
    code, err : the command's exit code and stderr
    expect_code : int
    words : str or list of str
        Must appear in stderr (case-insensitive); stderr must hold no traceback.
    before : dict
        :func:`snapshot` of the inputs taken before the run; they must be byte-identical now.
    folders : folders that must hold no temp/staging leftovers.
    absent : outputs that must not exist afterwards.
    """
    assert code == expect_code, (code, err)
    for w in [words] if isinstance(words, str) else words:
        assert w.lower() in err.lower(), (w, err)
    assert "Traceback" not in err, err
    assert snapshot(*[Path(p) for p in before]) == before, "an input changed"
    assert not leftovers(*folders), leftovers(*folders)
    for p in absent:
        assert not os.path.lexists(p), f"{p} should not exist"
