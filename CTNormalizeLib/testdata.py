"""Real CT data for tests, demos and benchmarks, fetched into a local cache (never committed).

- pyradiomics' ``data/`` folder (lung1, lung2, brain1, ... and the feature baseline) from the
  ``pyradiomics-bhklab==3.1.4`` sdist, via ``pip download`` (PyPI is reachable here).
- pydicom's ``CT_small.dcm`` (a real GE CT slice), shipped inside pydicom.

lung2 is for evaluation only: never train or tune on it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PYRADIOMICS_SDIST = "pyradiomics-bhklab==3.1.4"


def cache_dir() -> Path:
    """``$CTNORMALIZE_CACHE`` or ``~/.cache/ctnormalize``."""
    d = Path(os.environ.get("CTNORMALIZE_CACHE", Path.home() / ".cache" / "ctnormalize"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def pyradiomics_data_dir() -> Path:
    """The pyradiomics sdist's ``data/`` folder, downloaded and unpacked on first use."""
    target = cache_dir() / "pyradiomics-data"
    if (target / "lung1_image.nrrd").is_file() and (target / "baseline").is_dir():
        return target
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               "--no-build-isolation", PYRADIOMICS_SDIST, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        sdists = list(Path(tmp).glob("*.tar.gz"))
        if not sdists:
            # Newer pip may want to build metadata; a plain download still saves the sdist.
            proc = subprocess.run(cmd[:4] + [PYRADIOMICS_SDIST, "-d", tmp], capture_output=True, text=True)
            sdists = list(Path(tmp).glob("*.tar.gz"))
        if not sdists:
            raise RuntimeError(f"Could not download {PYRADIOMICS_SDIST}:\n{proc.stderr[-2000:]}")
        unpack = Path(tmp) / "unpacked"
        with tarfile.open(sdists[0]) as tf:
            members = [m for m in tf.getmembers() if "/data/" in m.name and m.isfile()]
            tf.extractall(unpack, members=members, filter="data")
        src = next(unpack.glob("*/data"))
        if target.exists():
            shutil.rmtree(target)
        os.replace(src, target)
    return target


def pyradiomics_case(name: str) -> tuple[Path, Path]:
    """``(image, label)`` paths of a pyradiomics case, e.g. ``"lung1"``."""
    d = pyradiomics_data_dir()
    return d / f"{name}_image.nrrd", d / f"{name}_label.nrrd"


def ct_small() -> Path:
    """pydicom's ``CT_small.dcm``: one GE CT slice, STANDARD kernel, 5 mm, 170 mAs."""
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("CT_small.dcm"))
