"""The result contracts against what ``ctnormalize emphysema --json`` and ``radiomics --json`` print."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CTNormalizeLib.contracts.results import (ContractError, EmphysemaMeasurement, EmphysemaReport,
                                              RadiomicsReport)

ROOT = Path(__file__).resolve().parents[2]


def _ct(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    a = np.full((10, 48, 48), -1000.0, np.float32)
    a[:, 6:42, 4:44] = 40.0
    a[:, 12:36, 8:21] = -860.0
    a[:, 12:36, 27:40] = -860.0
    a[:, 16:22, 10:15] = -980.0
    a += rng.normal(0, 20, a.shape).astype(np.float32)
    img = sitk.GetImageFromArray(np.round(a).astype(np.int16))
    img.SetSpacing((0.8, 0.8, 2.0))
    img.SetMetaData("Modality", "CT")
    sitk.WriteImage(img, str(path))
    return path


def _cli(*args) -> dict:
    res = subprocess.run([sys.executable, "-m", "CTNormalizeLib", *map(str, args)], capture_output=True,
                         text=True, cwd=ROOT, timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def cts(tmp_path_factory):
    d = tmp_path_factory.mktemp("contracts")
    lung = np.zeros((10, 48, 48), np.uint8)
    lung[:, 12:36, 8:21] = 1
    lung[:, 12:36, 27:40] = 1
    ref = sitk.ReadImage(str(_ct(d / "a.nrrd", 0)))
    lab = sitk.GetImageFromArray(lung)
    lab.CopyInformation(ref)
    sitk.WriteImage(lab, str(d / "lung.nrrd"))
    _ct(d / "b.nrrd", 1)
    return d


def test_emphysema_json_round_trips_through_the_contract(cts):
    doc = _cli("emphysema", cts / "a.nrrd", cts / "b.nrrd", "--lung-mask", cts / "lung.nrrd", "--json",
               "--mask-out", cts / "masks")
    report = EmphysemaReport.from_dict(doc)
    assert report.to_dict() == doc  # nothing the command prints is lost or invented
    a = report.for_input(str(cts / "a.nrrd"))
    b = report.for_input(str(cts / "b.nrrd"))
    assert a is report.results[0] and b is report.results[1]
    assert 0 < a.whole.laa_percent < 100 and a.provenance.threshold_hu == -950
    assert set(a.per_lung) == {"left", "right"} and set(a.per_zone) == {"upper", "middle", "lower"}
    assert Path(a.masks["emphysema"]).is_file() and Path(b.masks["lung"]).is_file()
    assert b.dice_vs_first is not None and 0 <= b.dice_vs_first <= 1
    assert set(a.regions()) == {"whole", "left", "right", "upper", "middle", "lower"}


def test_radiomics_json_round_trips_through_the_contract(cts):
    doc = _cli("radiomics", "--image", f"original={cts / 'a.nrrd'}", "--image", f"normalized={cts / 'b.nrrd'}",
               "--segments", cts / "lung.nrrd", "--json")
    report = RadiomicsReport.from_dict(doc)
    assert report.to_dict() == doc
    assert report.images == ["original", "normalized"]
    values = report.values()
    mean = values[("label_1", "original_firstorder_Mean")]
    assert set(mean) == {"original", "normalized"} and mean["original"] < -500
    assert report.provenance["params_path"].endswith(".yaml")


def test_contract_names_what_is_missing():
    good = {"input": "x.nrrd", "laa_percent": 1.0, "perc15_hu": -900.0, "lung_volume_ml": 1.0,
            "emphysema_volume_ml": 0.1, "mean_hu": -800.0, "per_lung": {}, "per_zone": {},
            "provenance": {"threshold_hu": -950, "threshold_rule": "HU < threshold", "mask_source": "engine",
                           "lung_method": "x", "engine_version": "0"}, "warnings": []}
    assert EmphysemaMeasurement.from_dict(good).whole.laa_percent == 1.0
    with pytest.raises(ContractError, match="perc15_hu"):
        EmphysemaMeasurement.from_dict({k: v for k, v in good.items() if k != "perc15_hu"})
    with pytest.raises(ContractError, match="laa_percent"):
        EmphysemaMeasurement.from_dict({**good, "laa_percent": "high"})
    with pytest.raises(ContractError, match="results"):
        EmphysemaReport.from_dict({"inputs": [good]})  # the key is 'results', nothing else
    with pytest.raises(ContractError, match="no measurement"):
        EmphysemaReport.from_dict({"results": [good]}).for_input("/elsewhere/y.nrrd")
    with pytest.raises(ContractError, match="images"):
        RadiomicsReport.from_dict({"features": [], "comparison": [], "provenance": {}, "warnings": []})
