"""Known-answer tests of the paired metrics (evaluate.metrics, nps, sharpness, agreement, grid)."""

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from CTNormalizeLib.errors import BadInputError
from CTNormalizeLib.evaluate import agreement, grid, metrics, nps, sharpness
from CTNormalizeLib.volume import Volume


def test_l1_hu_known_difference_and_mask():
    a = np.full((4, 8, 8), -700.0, np.float32)
    b = a.copy()
    b[:2] += 10.0
    m = np.zeros(a.shape, bool)
    m[:2] = True
    assert metrics.l1_hu(a, b) == pytest.approx(5.0)
    assert metrics.l1_hu(a, b, m) == pytest.approx(10.0)
    assert metrics.l1_hu(a, b, m.astype(np.uint8)) == pytest.approx(10.0)  # a 0/1 mask, not indices
    assert metrics.l1_hu(a, b, ~m) == pytest.approx(0.0)
    assert math.isnan(metrics.l1_hu(a, b, np.zeros(a.shape, bool)))
    with pytest.raises(BadInputError):
        metrics.l1_hu(a, b[:3])


def test_ssim_identical_is_one_and_psnr_of_known_noise():
    rng = np.random.default_rng(0)
    img = rng.uniform(-1000, 100, (12, 40, 40)).astype(np.float32)
    same = metrics.plane_metrics(img, img.copy())
    assert same["window_hu"] == [-1350.0, 150.0] and same["data_range"] == 1500.0
    for p in ("axial", "coronal", "sagittal"):
        assert same["ssim"][p] == pytest.approx(1.0)
        assert same["psnr"][p] == math.inf
    # noise of std s inside the window: PSNR = 10 log10(range^2 / s^2)
    ref = np.full((12, 40, 40), -600.0, np.float32)
    ref[:, 10:30, 10:30] = -200.0
    noisy = ref + rng.normal(0, 30.0, ref.shape).astype(np.float32)
    r = metrics.plane_metrics(noisy, ref)
    expect = 10 * np.log10(1500.0**2 / 30.0**2)
    assert r["psnr_volume"] == pytest.approx(expect, abs=0.1)
    assert r["psnr"]["axial"] == pytest.approx(expect, abs=0.2)
    assert 0 < r["ssim"]["axial"] < 0.99


def test_window_clips_before_comparing():
    ref = np.full((8, 16, 16), -600.0, np.float32)
    ref[:, 4:12, 4:12] = 500.0
    out = ref.copy()
    out[:, 4:12, 4:12] = 900.0  # differs only above the window's top (150 HU)
    r = metrics.plane_metrics(out, ref, window=(-1350, 150))
    assert r["psnr_volume"] == math.inf
    r2 = metrics.plane_metrics(out, ref, window=(-1000, 1000))
    assert r2["data_range"] == 2000.0 and r2["psnr_volume"] < 60
    with pytest.raises(BadInputError):
        metrics.plane_metrics(out, ref, window=(100, -100))


def test_plane_metrics_mask_and_slice_sampling_pick_the_slices():
    rng = np.random.default_rng(2)
    ref = rng.uniform(-900, -100, (10, 16, 16)).astype(np.float32)
    out = ref.copy()
    out[2] += 100.0  # one wrong axial slice
    m = np.zeros(ref.shape, bool)
    m[2] = True
    r = metrics.plane_metrics(out, ref, mask=m)
    assert r["psnr"]["axial"] == pytest.approx(10 * np.log10(1500.0**2 / 100.0**2), rel=1e-9)  # only slice 2
    assert r["ssim"]["axial"] < 0.99
    r = metrics.plane_metrics(out, ref, mask=~m)  # slice 2 left out
    assert r["psnr"]["axial"] == np.inf and r["ssim"]["axial"] == pytest.approx(1.0)
    assert metrics.plane_metrics(out, ref, max_slices=3)["psnr"]["axial"] == np.inf  # samples slices 0, 4, 9
    for all_slices in (None, 10):  # every slice: slice 2 lowers the mean SSIM
        assert metrics.plane_metrics(out, ref, max_slices=all_slices)["ssim"]["axial"] < 1.0
    with pytest.raises(BadInputError):
        metrics.plane_metrics(out, ref, window=(100, 100))  # an empty window


def test_laa_and_emphysema_metrics_known_fraction():
    lung = np.zeros((10, 20, 20), bool)
    lung[:, 5:15, 5:15] = True  # 1000 voxels
    hu = np.full(lung.shape, -850.0, np.float32)
    flat = np.flatnonzero(lung)
    hu.flat[flat[:230]] = -980.0  # 23 % below -950
    assert metrics.laa_percent(hu, lung) == pytest.approx(23.0)
    at = hu.copy()
    at.flat[flat[230:300]] = -950.0  # exactly at the threshold: not below it
    assert metrics.laa_percent(at, lung) == pytest.approx(23.0)
    assert metrics.laa_percent(at, lung, threshold=-949.5) == pytest.approx(30.0)
    ref = hu.copy()
    ref.flat[flat[200:230]] = -900.0  # reference: 20 %
    em = metrics.emphysema_metrics(hu, ref, (1, 1, 1), lung)
    assert em["laa_test"] == pytest.approx(23.0) and em["laa_reference"] == pytest.approx(20.0)
    assert em["ei_error"] == pytest.approx(3.0)
    assert em["emphysema_dice"] == pytest.approx(2 * 200 / (230 + 200))
    assert metrics.dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    assert metrics.dice([1, 1, 1, 0, 0], [1, 0, 0, 1, 0]) == pytest.approx(2 * 1 / (3 + 2), rel=1e-12)
    assert metrics.dice([0, 2, 0], [0, 0.5, 0]) == 1.0  # any non-zero is in the mask
    assert metrics.dice([1, 0], [0, 1]) == 0.0
    assert math.isnan(metrics.laa_percent(hu, np.zeros(lung.shape, bool)))  # no lung: undefined


def test_nps_of_white_noise_is_flat_at_sigma2_pixel_area():
    rng = np.random.default_rng(1)
    sigma, d = 20.0, (0.7, 0.7)
    rois = rng.normal(100.0, sigma, (200, 32, 32))
    expected = sigma**2 * d[0] * d[1]
    # mean removal only: flat in every radial bin
    f0, p0 = nps.radial_nps(*nps.nps_2d(rois, d, order=0))
    assert np.all(np.abs(p0 / expected - 1) < 0.1)
    # with a ramp and 2nd-order detrending: still flat (the fit only eats the lowest bin)
    rois += np.linspace(0, 50, 32)[None, None, :]
    p, fy, fx = nps.nps_2d(rois, d)
    f, pr = nps.radial_nps(p, fy, fx)
    assert np.all(np.abs(pr[1:] / expected - 1) < 0.1)
    assert pr[1:].mean() == pytest.approx(expected, rel=0.03)
    # integral of the 2D NPS over frequency = variance
    df = (fy[1] - fy[0]) * (fx[1] - fx[0])
    assert p.sum() * df == pytest.approx(sigma**2, rel=0.05)
    assert f.max() <= 1 / (2 * 0.7) + 1e-9


def test_nps_of_smoothed_noise_peaks_low_and_similarity():
    rng = np.random.default_rng(2)
    white = rng.normal(0, 20, (100, 32, 32))
    smooth = np.stack([ndi.gaussian_filter(r, 1.5, mode="wrap") for r in rng.normal(0, 60, (100, 32, 32))])
    fw, pw = nps.radial_nps(*nps.nps_2d(white, (1, 1)))
    fs, ps = nps.radial_nps(*nps.nps_2d(smooth, (1, 1)))
    sw, ss = nps.nps_summary(fw, pw), nps.nps_summary(fs, ps)
    assert ss["mean_frequency"] < sw["mean_frequency"]
    assert ss["peak_frequency"] < 0.2
    assert nps.nps_similarity(pw, pw * 7.0) == pytest.approx(1.0)  # level-independent
    sim = nps.nps_similarity(pw, ps)
    assert 0.0 <= sim < 0.8
    white2 = rng.normal(0, 5, (100, 32, 32))
    assert nps.nps_similarity(pw, nps.radial_nps(*nps.nps_2d(white2, (1, 1)))[1]) > 0.9


def test_uniform_roi_finder_stays_in_uniform_tissue():
    rng = np.random.default_rng(3)
    ref = np.full((4, 96, 96), -1000.0, np.float32)
    ref[:, 10:86, 10:86] = 40.0  # uniform "tissue" block
    ref[:, 40:56, 40:56] = 300.0  # a structure in the middle
    noisy = ref + rng.normal(0, 15, ref.shape).astype(np.float32)
    corners = nps.find_uniform_rois(noisy, roi=16, max_rois=20)
    assert len(corners) >= 8
    for z, y, x in corners:
        patch = ref[z, y:y + 16, x:x + 16]
        assert patch.min() == patch.max() == 40.0
    res = nps.nps_of(noisy, corners, (1, 1), roi=16)
    assert res["noise_std"] == pytest.approx(15, rel=0.1)


@pytest.mark.parametrize("sigma_mm", [0.6, 1.2])
def test_edge_width_and_mtf50_of_gaussian_blurred_disc(sigma_mm):
    px = 0.5
    n = 160
    yy, xx = np.mgrid[:n, :n]
    disc = (np.hypot(yy - n / 2, xx - n / 2) * px < 30).astype(np.float64)
    img = np.stack([ndi.gaussian_filter(disc * 1000 - 1000, sigma_mm / px)] * 2)
    mask = np.stack([disc > 0.5] * 2)
    pts = sharpness.edge_points(img, mask, (px, px))
    r = sharpness.sharpness(img, pts, (px, px))
    # 10-90 % width of a Gaussian ESF = 2 * 1.2816 sigma; MTF50 = sqrt(ln2 / (2 pi^2)) / sigma
    assert r["width_10_90_mm"] == pytest.approx(2.5631 * sigma_mm, rel=0.08)
    assert r["mtf50"] == pytest.approx(0.18739 / sigma_mm, rel=0.08)
    assert r["contrast_hu"] == pytest.approx(1000, rel=0.02)


def test_edge_width_orders_by_blur_with_noise():
    rng = np.random.default_rng(4)
    px, n = 0.7, 128
    yy, xx = np.mgrid[:n, :n]
    disc = (np.hypot(yy - n / 2, xx - n / 2) * px < 35).astype(np.float64) * 1000 - 1000
    vols = {s: np.stack([ndi.gaussian_filter(disc, s) + rng.normal(0, 40, disc.shape) for _ in range(3)])
            for s in (0.8, 2.0)}
    mask = np.stack([disc > -500] * 3)
    pts = sharpness.edge_points(ndi.gaussian_filter(disc, 1.0)[None].repeat(3, 0), mask, (px, px))
    w = {s: sharpness.sharpness(v, pts, (px, px))["width_10_90_mm"] for s, v in vols.items()}
    assert w[0.8] < w[2.0]


def test_ccc_identical_and_shifted_vectors():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert agreement.lins_ccc(x, x) == pytest.approx(1.0)
    # shift by c: CCC = 2 var / (2 var + c^2); var (1/n) of 1..5 is 2
    assert agreement.lins_ccc(x, x + 1.0) == pytest.approx(2 * 2 / (2 * 2 + 1.0))
    assert agreement.lins_ccc(x, -x) == pytest.approx(-2 * 2 / (2 * 2 + 36.0))
    assert math.isnan(agreement.lins_ccc([1.0], [1.0]))
    fc = agreement.feature_ccc({"a": x, "b": x + 3}, {"a": x, "b": x})
    assert fc["ccc"]["a"] == pytest.approx(1.0) and fc["ccc"]["b"] < 0.85
    assert fc["percent_reproducible"] == pytest.approx(50.0)


def test_relative_feature_error_and_wilcoxon():
    assert agreement.relative_feature_error({"a": 11.0, "b": 0.5}, {"a": 10.0, "b": 1.0}) == pytest.approx(0.3)
    rng = np.random.default_rng(5)
    a = rng.normal(0, 1, 30)
    w = agreement.paired_wilcoxon(a + 2.0, a)
    assert w["p_value"] < 1e-4 and w["median_difference"] == pytest.approx(2.0)
    same = agreement.paired_wilcoxon(a, a)
    assert math.isnan(same["p_value"]) and "note" in same


def test_ccc_edge_cases_and_feature_table_fields():
    assert agreement.lins_ccc([1.0, 2.0], [1.0, 2.0]) == pytest.approx(1.0)  # two cases are enough
    assert agreement.lins_ccc([5.0, 5.0, 5.0], [5.0, 5.0, 5.0]) == 1.0  # no spread, equal: full agreement
    # a pair with a NaN on either side is dropped: the rest agree perfectly
    assert agreement.lins_ccc([1.0, np.nan, 3.0, 4.0], [1.0, 2.0, 3.0, np.inf]) == pytest.approx(1.0)
    x = np.array([1.0, 2.0, 3.0, 4.0])
    fc = agreement.feature_ccc({"a": x, "b": x}, {"a": x, "b": x, "c": x})  # "c" not in test: left out
    assert fc == {"ccc": {"a": pytest.approx(1.0), "b": pytest.approx(1.0)}, "n_cases": 4,
                  "percent_reproducible": 100.0, "threshold": 0.85}
    empty = agreement.feature_ccc({}, {})
    assert empty["n_cases"] == 0 and math.isnan(empty["percent_reproducible"])


def test_relative_feature_error_skips_missing_and_non_finite_features():
    ref = {"a": 10.0, "nan": float("nan"), "b": 1.0, "gone": 5.0, "zero": 0.0}
    test = {"a": 11.0, "nan": 3.0, "b": 0.5, "zero": 1e-7}
    # a: 0.1, b: 0.5, zero: 1e-7 / eps(1e-6) = 0.1; "nan" (reference NaN) and "gone" (not in test) skipped
    assert agreement.relative_feature_error(test, ref) == pytest.approx((0.1 + 0.5 + 0.1) / 3, rel=1e-12)
    assert math.isnan(agreement.relative_feature_error({}, {"a": 1.0}))
    assert math.isnan(agreement.relative_feature_error({"a": float("inf")}, {"a": 1.0}))


def test_paired_wilcoxon_is_scipys_test_of_the_differences():
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(7)
    b = rng.normal(100.0, 5.0, 20)
    a = b + rng.normal(0.4, 1.0, 20)
    a[3], b[11] = np.nan, np.nan  # pairs with a NaN on either side are dropped
    w = agreement.paired_wilcoxon(a, b)
    ok = np.isfinite(a) & np.isfinite(b)
    ref = wilcoxon(a[ok] - b[ok])
    assert w["n"] == 18 and w["median_difference"] == pytest.approx(float(np.median(a[ok] - b[ok])), rel=1e-12)
    assert (w["statistic"], w["p_value"]) == (pytest.approx(float(ref.statistic)), pytest.approx(float(ref.pvalue)))
    two = agreement.paired_wilcoxon([1, 2, 3, 4], [1, 2, 4, 6])  # exactly 2 non-zero differences: tested
    assert math.isfinite(two["p_value"]) and "note" not in two and two["n"] == 4
    one = agreement.paired_wilcoxon([1, 2, 3], [1, 2, 4])
    assert math.isnan(one["p_value"]) and math.isnan(one["statistic"]) and one["median_difference"] == 0.0
    assert one["note"] == "fewer than 2 non-zero paired differences"
    empty = agreement.paired_wilcoxon([np.nan], [1.0])
    assert empty["n"] == 0 and math.isnan(empty["median_difference"])


def test_gap_closed():
    assert agreement.gap_closed(10.0, 10.0, 2.0) == pytest.approx(0.0)
    assert agreement.gap_closed(10.0, 2.0, 2.0) == pytest.approx(1.0)
    assert agreement.gap_closed(10.0, 6.0, 2.0) == pytest.approx(0.5)
    assert agreement.gap_closed(0.80, 0.90, 1.0) == pytest.approx(0.5)  # higher-is-better works too
    assert agreement.gap_closed(5.0, 1.0, 5.0) is None  # no gap: undefined
    assert agreement.gap_closed(float("nan"), 1.0, 2.0) is None


def test_to_target_grid_interpolates_thick_source_on_common_extent():
    z1 = np.arange(30, dtype=np.float32)  # target 1 mm: value = z position
    tgt = Volume(np.broadcast_to(z1[:, None, None], (30, 4, 4)).copy(), spacing=(1, 1, 1))
    z3 = np.arange(0, 30, 3, dtype=np.float32)  # source 3 mm, 10 slices: 0..27 mm
    src = Volume(np.broadcast_to(z3[:, None, None], (10, 4, 4)).copy(), spacing=(3, 1, 1))
    t, (s,), info = grid.to_target_grid(tgt, src)
    assert t.shape[0] == 28 and info["z_range_mm"] == [0.0, 27.0]
    np.testing.assert_allclose(s.hu[:, 0, 0], np.arange(28), atol=1e-5)
    assert info["interpolated"] == [True]
    t2, (same,), info2 = grid.to_target_grid(tgt, tgt)
    assert info2["interpolated"] == [False] and np.array_equal(same.hu, tgt.hu)
    with pytest.raises(BadInputError):
        grid.to_target_grid(tgt, Volume(np.zeros((5, 3, 3)), spacing=(1, 1, 1)))


def test_lpips_only_with_a_user_weights_file(tmp_path):
    import torch
    from safetensors.torch import save_file

    from CTNormalizeLib.evaluate import lpips

    rng = np.random.default_rng(6)
    a = rng.uniform(-1000, 100, (3, 64, 64)).astype(np.float32)
    assert lpips.lpips_metric(a, a, None) == {"lpips": None, "lpips_note": lpips.ABSENT_NOTE}
    g = torch.Generator().manual_seed(0)
    state = {}
    for (cin, cout, k, _s, _p), i in zip(lpips._CONV, lpips._IDX):
        state[f"features.{i}.weight"] = torch.randn(cout, cin, k, k, generator=g) * 0.05
        state[f"features.{i}.bias"] = torch.zeros(cout)
    w = tmp_path / "alex.safetensors"
    save_file(state, str(w))
    same = lpips.lpips_metric(a, a.copy(), w)
    assert same["lpips"] == pytest.approx(0.0, abs=1e-6) and "uniform channel weights" in same["lpips_note"]
    b = a + rng.normal(0, 200, a.shape).astype(np.float32)
    assert lpips.lpips_metric(b, a, w)["lpips"] > 0
    bad = tmp_path / "bad.safetensors"
    save_file({"x": torch.zeros(1)}, str(bad))
    with pytest.raises(BadInputError):
        lpips.lpips_metric(a, a, bad)
