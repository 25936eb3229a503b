"""Shared fixtures: real CT data from the cache (downloaded on first use, never committed)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

try:  # property tests: 200 examples by default; scripts/mutation.sh runs them with 20 per mutant
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ctnormalize", max_examples=200, deadline=None)
    _hypothesis_settings.register_profile("mutation", max_examples=20, deadline=None, database=None)
    _hypothesis_settings.load_profile(os.environ.get("CTNORMALIZE_HYPOTHESIS", "ctnormalize"))
except ImportError:  # the property-test files fail on their own import, loudly
    pass


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
