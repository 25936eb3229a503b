"""Shared fixtures: real CT data from the cache (downloaded on first use, never committed)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def pyradiomics_data() -> Path:
    from CTNormalizeLib import testdata

    return testdata.pyradiomics_data_dir()


@pytest.fixture(scope="session")
def lung1_path(pyradiomics_data) -> Path:
    return pyradiomics_data / "lung1_image.nrrd"


@pytest.fixture(scope="session")
def lung1_label_path(pyradiomics_data) -> Path:
    return pyradiomics_data / "lung1_label.nrrd"


@pytest.fixture(scope="session")
def brain1_path(pyradiomics_data) -> Path:
    return pyradiomics_data / "brain1_image.nrrd"


@pytest.fixture(scope="session")
def ct_small_path() -> Path:
    from CTNormalizeLib import testdata

    return testdata.ct_small()
