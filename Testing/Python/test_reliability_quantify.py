"""Reliability suite, quantification: what cannot be measured is refused, not reported.

A scan without lungs gets ``NO_LUNGS`` instead of millilitres of body edge; an image passed
as ``--segments`` is refused at once instead of running pyradiomics per grey value. New
cases of this kind go here (see docs/DEVELOPING.md).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from reliability import chest, check_case, cli, snapshot, write_image


def water_cylinder(nz=20, n=128, blur_mm=1.0, seed=0) -> np.ndarray:
    """A water cylinder in air with a partial-volume edge (as a real kernel gives) and noise.

    Its smoothed edge falls below the lung threshold inside the body: the region the lung
    segmentation finds on a scan without lungs (4 ml at a median near -330 HU here)."""
    y, x = (np.mgrid[:n, :n] - n / 2 + 0.5) * 1.5
    r = np.hypot(x, y / 0.8)
    sl = ndi.gaussian_filter(np.where(r < 70, 0.0, -1000.0), blur_mm / 1.5)
    hu = np.repeat(sl[None], nz, 0) + np.random.default_rng(seed).normal(0, 20, (nz, n, n))
    return hu.astype(np.float32)


@pytest.mark.parametrize("blur_mm", [1.0, 2.0])
def test_emphysema_without_lungs_is_no_lungs(capsys, tmp_path, blur_mm):
    phantom = write_image(tmp_path / "water.nrrd", water_cylinder(blur_mm=blur_mm), spacing=(1.5, 1.5, 2.5))
    before = snapshot(phantom)
    code, out, err = cli(capsys, "emphysema", phantom, "--json", "--mask-out", tmp_path / "masks")
    check_case(code, err, 2, ["NO_LUNGS", "median"], before, [tmp_path], absent=[tmp_path / "masks"])
    assert json.loads(out) == {"error": {"code": "NO_LUNGS", "message": err.split("NO_LUNGS]: ", 1)[1].strip(),
                                         "exit_code": 2}}  # --json: the refusal is its one object


def test_emphysema_of_air_only_is_no_lungs(capsys, tmp_path):
    air = write_image(tmp_path / "air.nrrd", np.full((8, 32, 32), -1000.0, np.float32)
                      + np.random.default_rng(0).normal(0, 5, (8, 32, 32)).astype(np.float32))
    code, _, err = cli(capsys, "emphysema", air)
    check_case(code, err, 2, "NO_LUNGS", snapshot(air), [tmp_path])


def test_emphysema_of_a_chest_still_measures(capsys, tmp_path):
    ct = write_image(tmp_path / "ct.nrrd", chest(shape=(16, 96, 96)))
    code, out, err = cli(capsys, "emphysema", ct, "--json")
    assert code == 0, err


@pytest.mark.parametrize("what", ["ct", "float", "negative"])
def test_radiomics_segments_that_are_an_image_are_refused(capsys, tmp_path, what):
    ct = write_image(tmp_path / "ct.nrrd", chest())
    if what == "ct":
        seg = ct
    elif what == "float":
        seg = write_image(tmp_path / "f.nrrd", (chest() < -500).astype(np.float32) * 1.5)
    else:
        seg = write_image(tmp_path / "n.nrrd", np.where(chest() < -500, -1, 0).astype(np.int16))
    before = snapshot(ct, seg)
    t = time.monotonic()
    code, _, err = cli(capsys, "radiomics", "--image", f"ct={ct}", "--segments", seg, "-o", tmp_path / "f.csv")
    assert time.monotonic() - t < 20
    check_case(code, err, 2, "looks like an image, not a segmentation", before, [tmp_path],
               absent=[tmp_path / "f.csv"])


def test_labelmap_with_many_labels_is_refused_but_few_are_fine(tmp_path):
    from CTNormalizeLib.errors import BadInputError
    from CTNormalizeLib.quantify.radiomics import MAX_LABELS, check_labelmap

    many = np.arange(2 * MAX_LABELS, dtype=np.uint16).reshape(1, 2, MAX_LABELS)
    with pytest.raises(BadInputError, match="distinct values"):
        check_labelmap(many, "many.nrrd")
    check_labelmap(np.arange(10, dtype=np.uint8).reshape(1, 2, 5), "few.nrrd")
    check_labelmap(np.array([0.0, 1.0, 2.0], np.float32), "float-integers.nrrd")


def test_batch_case_without_lungs_is_an_empty_measurement_with_a_warning(tmp_path):
    """In a cohort a scan without lungs is not a failed case: its emphysema entry is empty and a
    NO_LUNGS warning says why (the normalized output is still written)."""
    from CTNormalizeLib.cohort.case import BatchSettings, run_case
    from CTNormalizeLib.cohort.manifest import Case

    phantom = write_image(tmp_path / "water.nrrd", water_cylinder(nz=8), spacing=(1.5, 1.5, 2.5))
    settings = BatchSettings(target="kernel=smooth", method="mtf_ratio", source="kernel=sharp,dose=1,thickness=2.5",
                             emphysema=True, measure=False)
    rec = run_case(Case(name="water", input=str(phantom), folder="water"), settings, str(tmp_path / "out"))
    assert rec["status"] == "done", rec.get("error")
    assert rec["emphysema"] == {"original": None, "normalized": None}
    assert [w["code"] for w in rec["warnings"]].count("NO_LUNGS") == 2
    assert (tmp_path / "out" / "cases" / "water" / "normalized.nrrd").is_file()
