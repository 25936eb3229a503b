"""The emphysema index on tiny hand-made volumes: every number of the result is known in advance."""

import json

import numpy as np
import pytest

from CTNormalizeLib.quantify.emphysema import emphysema_index, zone_slices

SPACING = (2.0, 1.0, 0.5)  # 1 mm^3 voxels: 0.001 ml each
FLIP_Z = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # first slice superior


def _case():
    """6 slices; lungs on z = 1..5 only: right (label 1) x = 0..1, left (label 2) x = 3..4."""
    hu = np.full((6, 4, 5), 40.0, np.float32)
    labels = np.zeros(hu.shape, np.uint8)
    labels[1:, :, 0:2] = 1
    labels[1:, :, 3:5] = 2
    hu[labels > 0] = -900.0
    hu[1, 0, 0] = hu[1, 1, 0] = -960.0  # right lung, lowest slices
    hu[2, 0, 3] = -990.0  # left lung
    hu[5, 0, 4] = -950.0  # exactly at the threshold: not emphysema
    return hu, labels


def test_known_table_from_a_label_array():
    hu, labels = _case()
    r = emphysema_index(hu, SPACING, lung=labels)
    assert r.lung_method == "array (labels 1=R, 2=L)" and r.mask_source == "array"
    assert r.laa_percent == pytest.approx(100 * 3 / 80, rel=1e-12)
    assert r.lung_volume_ml == pytest.approx(0.080, rel=1e-12)
    assert r.emphysema_volume_ml == pytest.approx(0.003, rel=1e-12)
    assert r.mean_hu == pytest.approx((76 * -900.0 - 2 * 960 - 990 - 950) / 80, rel=1e-12)
    assert r.perc15_hu == pytest.approx(float(np.percentile(hu[labels > 0], 15)), rel=1e-12)
    assert r.per_lung["right"]["voxels"] == r.per_lung["left"]["voxels"] == 40
    assert r.per_lung["right"]["laa_percent"] == pytest.approx(5.0) and r.per_lung["left"]["laa_percent"] == 2.5
    assert r.per_lung["left"]["emphysema_volume_ml"] == pytest.approx(0.001, rel=1e-12)
    np.testing.assert_array_equal(r.emphysema_mask, (labels > 0) & (hu < -950))
    # lung extent z = 1..5: thirds at round(5/3) = 2 and round(10/3) = 3 slices; last slice superior
    assert {k: v["z_range"] for k, v in r.per_zone.items()} == {"lower": [1, 3], "middle": [3, 4], "upper": [4, 6]}
    assert r.per_zone["lower"]["voxels"] == 32 and r.per_zone["lower"]["laa_percent"] == pytest.approx(100 * 3 / 32)
    assert r.per_zone["upper"]["laa_percent"] == 0.0  # the -950 voxel does not count
    assert [w["code"] for w in r.warnings] == ["SMALL_LUNG"]


def test_zones_follow_the_direction_and_to_dict_is_json():
    hu, labels = _case()
    r = emphysema_index(hu, SPACING, lung=labels, direction=FLIP_Z, threshold=-955.0)
    assert {k: v["z_range"] for k, v in r.per_zone.items()} == {"upper": [1, 3], "middle": [3, 4], "lower": [4, 6]}
    d = json.loads(json.dumps(r.to_dict()))
    assert d["laa_percent"] == pytest.approx(100 * 3 / 80) and d["lung_volume_ml"] == pytest.approx(0.08)
    assert d["emphysema_volume_ml"] == pytest.approx(0.003) and d["mean_hu"] == pytest.approx(r.mean_hu)
    assert d["perc15_hu"] == r.perc15_hu and d["per_lung"] == r.per_lung and d["per_zone"]["upper"]["z_range"] == [1, 3]
    assert d["provenance"] == {"threshold_hu": -955.0, "threshold_rule": "HU < threshold", "mask_source": "array",
                               "lung_method": "array (labels 1=R, 2=L)", "engine_version": r.engine_version}
    assert [w["code"] for w in d["warnings"]] == ["SMALL_LUNG"]


def test_empty_and_single_voxel_sides():
    hu, labels = _case()
    one_sided = np.where(labels == 2, 2, 0).astype(np.uint8)
    one_sided[3, 2, 1] = 1  # the right lung: one voxel
    r = emphysema_index(hu, SPACING, lung=one_sided)
    assert r.per_lung["right"] == {"laa_percent": 0.0, "perc15_hu": -900.0, "lung_volume_ml": pytest.approx(0.001),
                                   "emphysema_volume_ml": 0.0, "mean_hu": -900.0, "voxels": 1}
    only_left = np.where(labels == 2, 2, 0).astype(np.uint8)
    r = emphysema_index(hu, SPACING, lung=only_left)
    assert r.per_lung["right"] == {"laa_percent": None, "perc15_hu": None, "lung_volume_ml": 0.0,
                                   "emphysema_volume_ml": 0.0, "mean_hu": None, "voxels": 0}


def test_zone_slices_of_an_empty_mask_select_nothing():
    z = zone_slices(np.zeros((6, 2, 2), bool))
    assert set(z) == {"upper", "middle", "lower"} and all(np.arange(6)[s].size == 0 for s in z.values())


def test_zero_one_array_is_split_by_the_engine_and_none_runs_the_lung_mask():
    from test_quantify import synthetic_chest

    from CTNormalizeLib.imaging.lungs import lung_mask

    vol, truth = synthetic_chest(shape=(24, 64, 64), spacing=(5.0, 4.5, 4.5), noise=10.0, seed=2)
    as_int = emphysema_index(vol, lung=truth["lungs"].astype(np.uint8))
    assert as_int.lung_method.startswith("array (left/right by") and as_int.mask_source == "array"
    np.testing.assert_array_equal(as_int.lung.left | as_int.lung.right, truth["lungs"])
    assert as_int.per_lung["left"]["voxels"] == pytest.approx(truth["left"].sum(), rel=0.02)
    engine = emphysema_index(vol)
    ref = lung_mask(vol)
    assert engine.mask_source == "engine" and engine.lung_method == ref.method
    np.testing.assert_array_equal(engine.lung.lungs, ref.lungs)
    assert engine.lung_volume_ml == pytest.approx(ref.lungs.sum() * np.prod(vol.spacing) / 1000.0, rel=1e-12)
