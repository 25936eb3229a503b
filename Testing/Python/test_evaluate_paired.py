"""A paired evaluation on a small synthetic chest: the floor discipline and the metrics' directions."""

import numpy as np
import pytest

from CTNormalizeLib.classical import synthetic
from CTNormalizeLib.evaluate import lpips, paired
from CTNormalizeLib.volume import Volume

SP = (0.5, 0.7, 0.7)


@pytest.fixture(scope="module")
def scans():
    truth = synthetic.disk_phantom((32, 112, 112), SP, seed=1000)
    truth[truth < -800] -= 60.0 * (np.random.default_rng(0).random(truth[truth < -800].shape) < 0.3)

    def sc(kernel, dose, thick, seed):
        hu, sp = synthetic.scan(truth, SP, kernel, dose, thick, seed=seed)
        return Volume(hu, sp)

    return {"target": sc("smooth", 1.0, 1.0, 1), "replicate": sc("smooth", 1.0, 1.0, 2),
            "source": sc("sharp", 0.25, 2.0, 3), "original": truth}


@pytest.fixture(scope="module")
def result(scans):
    # "output" = the replicate: a perfect method closes the whole gap
    return paired.evaluate_pair(scans["target"], scans["source"], scans["replicate"], scans["replicate"])


def test_output_equal_to_replicate_closes_the_gap(result):
    t = result["table"]
    for name in ("l1_body_hu", "psnr_axial", "ssim_coronal", "nps_similarity", "noise_std_error_hu"):
        assert t[name]["gap_closed"] == pytest.approx(1.0), name


def test_floor_table_gap_of_a_known_row():
    rows = paired.floor_table({"source": {"l1_body_hu": 10.0, "psnr_axial": 20.0},
                               "output": {"l1_body_hu": 6.0, "psnr_axial": 29.0},
                               "replicate": {"l1_body_hu": 2.0, "psnr_axial": 32.0}})
    assert rows["l1_body_hu"]["gap_closed"] == pytest.approx(0.5, rel=1e-12)
    assert rows["psnr_axial"]["gap_closed"] == pytest.approx(0.75, rel=1e-12)
    assert (rows["l1_body_hu"]["source"], rows["l1_body_hu"]["output"], rows["l1_body_hu"]["replicate"]) == (10.0, 6.0, 2.0)
    assert (rows["l1_body_hu"]["better"], rows["psnr_axial"]["better"]) == ("lower", "higher")


def test_output_halfway_to_the_replicate_has_a_known_gap(scans):
    """output = target + (replicate - target) / 2: its L1 is half the replicate's, so the gap is known."""
    tgt, rep = scans["target"], scans["replicate"]
    half = Volume(tgt.hu + 0.5 * (rep.hu - tgt.hu), tgt.spacing, tgt.origin, tgt.direction)
    row = paired.evaluate_pair(tgt, scans["source"], half, rep, with_features=False)["table"]["l1_body_hu"]
    s, r = row["source"], row["replicate"]
    assert row["output"] == pytest.approx(r / 2, rel=1e-5)
    assert row["gap_closed"] == pytest.approx((s - r / 2) / (s - r), rel=1e-5)
    assert row["gap_closed"] > 1.0  # half the replicate's difference beats the floor


def test_output_equal_to_source_closes_no_gap(scans):
    t = paired.evaluate_pair(scans["target"], scans["source"], scans["source"], scans["replicate"],
                             with_features=False)["table"]
    for name in ("l1_body_hu", "psnr_axial", "ssim_coronal", "nps_similarity"):
        assert t[name]["gap_closed"] == 0.0, name


def test_source_is_worse_than_replicate_in_every_direction(result):
    t = result["table"]
    for name, row in t.items():
        if row["gap_closed"] is None or name == "lpips":
            continue
        if row["better"] == "lower":
            assert row["source"] > row["replicate"], name
        else:
            assert row["source"] < row["replicate"], name


def test_sharp_lowdose_source_is_noisier_and_sharper(result):
    v = result["values"]
    assert v["source"]["noise_std_hu"] > 1.5 * v["target"]["noise_std_hu"]
    assert v["source"]["edge_width_mm"] < v["target"]["edge_width_mm"]
    assert v["source"]["mtf50"] > v["target"]["mtf50"]
    assert result["masks"]["nps_rois"] >= 4 and result["masks"]["edge_points"] > 100


def test_lpips_marked_absent_and_settings_stated(result):
    assert result["lpips"] is None and result["lpips_note"].startswith("absent")
    assert lpips.absent() == {"lpips": None, "lpips_note": lpips.ABSENT_NOTE}
    assert result["settings"]["window_hu"] == [-1350.0, 150.0]
    assert result["settings"]["data_range"] == 1500.0
    assert "interpolated" in result["grid"]["note"]


def test_inputs_not_modified(scans):
    before = {k: v.hu.copy() for k, v in scans.items() if isinstance(v, Volume)}
    paired.evaluate_pair(scans["target"], scans["source"], None, None)
    for k, arr in before.items():
        assert np.array_equal(arr, scans[k].hu)


def test_floor_table_without_replicate_has_no_gap():
    rows = paired.floor_table({"source": {"l1_body_hu": 10.0}, "output": {"l1_body_hu": 5.0}})
    assert rows["l1_body_hu"]["gap_closed"] is None and rows["l1_body_hu"]["replicate"] is None
