"""``ctnormalize emphysema`` through a subprocess: exit codes, JSON keys, mask outputs."""

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from test_quantify import synthetic_chest


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "CTNormalizeLib", "emphysema", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def _save(vol, path, arr=None):
    img = sitk.GetImageFromArray(vol.hu.astype(np.int16) if arr is None else arr)
    img.SetSpacing(tuple(reversed(vol.spacing)))
    img.SetOrigin(vol.origin)
    sitk.WriteImage(img, str(path))
    return path


@pytest.fixture(scope="module")
def chest(tmp_path_factory):
    d = tmp_path_factory.mktemp("emph")
    vol, truth = synthetic_chest(shape=(32, 80, 80), spacing=(3.0, 3.6, 3.6), noise=20.0, seed=11)
    hu = vol.hu.copy()
    rng = np.random.default_rng(0)
    hu[truth["lungs"] & (rng.random(hu.shape) < 0.1)] = -990.0
    vol.hu = hu
    return vol, truth, _save(vol, d / "chest.nrrd"), d


def test_json_two_inputs_and_masks(chest, tmp_path):
    vol, truth, path, _ = chest
    out = tmp_path / "masks"
    p = _cli(path, path, "--json", "--mask-out", out)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert len(d["results"]) == 2
    r = d["results"][0]
    for key in ("laa_percent", "perc15_hu", "lung_volume_ml", "per_lung", "per_zone", "provenance"):
        assert key in r
    assert set(r["per_lung"]) == {"left", "right"}
    assert set(r["per_zone"]) == {"upper", "middle", "lower"}
    for g in list(r["per_lung"].values()) + list(r["per_zone"].values()):
        assert {"laa_percent", "perc15_hu", "lung_volume_ml"} <= set(g)
    assert r["provenance"]["mask_source"] == "engine"
    # about 10 % of the lung set to -990 HU: with the true lung mask the answer is a count of the file's
    # voxels; the engine's own mask differs at the lung borders (measured 10.28 vs 10.67 %)
    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert r["laa_percent"] == pytest.approx(100.0 * np.mean(hu[truth["lungs"]] < -950), abs=0.5)
    assert d["results"][1]["dice_vs_first"] == 1.0
    lung = sitk.GetArrayFromImage(sitk.ReadImage(r["masks"]["lung"]))
    emph = sitk.GetArrayFromImage(sitk.ReadImage(r["masks"]["emphysema"]))
    assert set(np.unique(lung)) == {0, 1, 2}
    assert emph.sum() == round(r["laa_percent"] / 100 * (lung > 0).sum())
    assert sorted(x.name for x in out.iterdir()) == ["chest_1_emphysema.nrrd", "chest_1_lung.nrrd",
                                                     "chest_emphysema.nrrd", "chest_lung.nrrd"]


def test_no_dice_on_another_grid(chest, tmp_path):
    """Same array shape, grid moved by 30 mm: the masks do not overlap voxel for voxel, so no Dice, and a
    warning saying why (it used to compare the arrays whenever the shapes matched, and to drop the Dice
    without a word when they did not)."""
    vol, _, path, _ = chest
    moved = vol.with_array(vol.hu, origin=(vol.origin[0] + 30.0, vol.origin[1], vol.origin[2]))
    other = _save(moved, tmp_path / "moved.nrrd")
    p = _cli(path, other, "--json")
    assert p.returncode == 0, p.stderr
    second = json.loads(p.stdout)["results"][1]
    assert "dice_vs_first" not in second
    (w,) = [w for w in second["warnings"] if w["code"] == "NO_DICE_OTHER_GRID"]
    assert "origin" in w["message"] and "first CT" in w["message"]
    p = _cli(path, other)
    assert p.returncode == 0 and "NO_DICE_OTHER_GRID" in p.stdout and "Dice vs first" not in p.stdout


def test_a_ct_covering_less_z_than_the_first_is_named(chest, tmp_path):
    """Lung volumes of two CTs compare only over the same z length (a thick -> thin output covers a slice less)."""
    vol, _, path, _ = chest
    shorter = _save(vol.with_array(vol.hu[2:-2]), tmp_path / "shorter.nrrd")
    d = json.loads(_cli(path, shorter, path, "--json").stdout)["results"]
    codes = [[w["code"] for w in r["warnings"]] for r in d]
    assert "Z_EXTENT_DIFFERS" in codes[1] and "Z_EXTENT_DIFFERS" not in codes[0] + codes[2]
    (w,) = [w for w in d[1]["warnings"] if w["code"] == "Z_EXTENT_DIFFERS"]
    assert "This CT covers 84 mm along z, the first 96 mm (-12.5 %)" in w["message"]


def test_table_with_user_mask_and_threshold(chest):
    vol, truth, path, d = chest
    mask = _save(vol, d / "lungs.nrrd", truth["lungs"].astype(np.uint8))
    p = _cli(path, "--lung-mask", mask, "--threshold", "-900")
    assert p.returncode == 0, p.stderr
    assert "LAA%" in p.stdout and "upper" in p.stdout and "right" in p.stdout
    assert "user:" in p.stdout and "-900" in p.stdout
    p = _cli(path, "--lung-mask", mask, "--threshold", "-900", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)["results"][0]
    hu = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    lungs = truth["lungs"]
    assert r["laa_percent"] == pytest.approx(100.0 * np.mean(hu[lungs] < -900), rel=1e-9)
    assert r["lung_volume_ml"] == pytest.approx(lungs.sum() * np.prod(vol.spacing) / 1000.0, rel=1e-9)


def test_bad_inputs(chest, tmp_path):
    vol, truth, path, d = chest
    p = _cli(tmp_path / "missing.nrrd")
    assert p.returncode == 2 and "not found" in p.stderr
    img = sitk.GetImageFromArray(truth["lungs"][:, ::2, ::2].astype(np.uint8))
    sitk.WriteImage(img, str(tmp_path / "small.nrrd"))
    p = _cli(path, "--lung-mask", tmp_path / "small.nrrd", "--json")
    assert p.returncode == 2 and "geometry" in p.stderr
    # --json promised one object on stdout: the refusal is that object (and stays text without --json)
    err = json.loads(p.stdout)["error"]
    assert err["code"] == "BAD_INPUT" and err["exit_code"] == 2 and "geometry" in err["message"]
    assert _cli(tmp_path / "missing.nrrd").stdout == ""
    p = _cli(path, path, path, "--lung-mask", tmp_path / "small.nrrd", "--lung-mask", tmp_path / "small.nrrd")
    assert p.returncode == 2 and "once per CT" in p.stderr


def test_help():
    p = _cli("--help")
    assert p.returncode == 0 and "--lung-mask" in p.stdout
    p = subprocess.run([sys.executable, "-m", "CTNormalizeLib", "--help"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "emphysema" in p.stdout and "radiomics" in p.stdout
