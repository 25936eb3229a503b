"""Classical normalization: known-answer unit tests on small synthetic volumes."""

import numpy as np
import pytest

from CTNormalizeLib.errors import BadInputError
from CTNormalizeLib.protocols import parse_spec
from CTNormalizeLib.volume import Volume
from CTNormalizeLib.imaging import body_mask
from CTNormalizeLib.classical import (
    band_energies,
    change_thickness,
    convert_kernel,
    denoise_volume,
    lung_mask,
    match_histogram,
    normalize_bands,
    target_slice_count,
)
from CTNormalizeLib.classical.mtf_ratio import MIN_LAMBDA, SIGNAL_SCALE_HU, mtf_ratio_transfer, wiener_lambda
from CTNormalizeLib.classical.synthetic import disk_phantom, scan
from CTNormalizeLib.methods import method_table
from CTNormalizeLib.normalization import normalize
from CTNormalizeLib.protocols import kernel_mtf

CLASSICAL_METHODS = [m.name for m in method_table(with_models=False).values()]


def normalize_classical(vol, source, target, method="classical", reference=None, progress=None, texture="target"):
    return normalize(vol, source, target, method=method, reference=reference, progress=progress,
                     texture=texture).result

SP = (0.5, 0.7, 0.7)


@pytest.fixture(scope="module")
def truth():
    return disk_phantom((32, 96, 96), SP, seed=3)


def test_mtf_ratio_identical_kernels_is_identity(truth):
    x = truth[:4]
    y = convert_kernel(x, SP, "sharp", "sharp")
    assert np.allclose(y, x, atol=1e-2)


def test_mtf_ratio_round_trip_noise_free(truth):
    smooth, sp = scan(truth, SP, "smooth", 1.0, 1.0, full_dose_noise=0.0)
    sharp = convert_kernel(smooth, sp, "smooth", "sharp", lam=1e-4)
    back = convert_kernel(sharp, sp, "sharp", "smooth")
    sharp_direct, _ = scan(truth, SP, "sharp", 1.0, 1.0, full_dose_noise=0.0)
    # the round trip returns close to the start, and the forward step moves toward the real sharp image
    assert np.mean(np.abs(back - smooth)) < 0.1 * np.mean(np.abs(sharp_direct - smooth))
    assert np.mean(np.abs(sharp - sharp_direct)) < 0.5 * np.mean(np.abs(smooth - sharp_direct))


def test_wiener_lambda_is_the_squared_noise_to_signal_ratio():
    assert SIGNAL_SCALE_HU == 100.0
    assert wiener_lambda(20.0) == pytest.approx(0.04, rel=1e-12)
    assert wiener_lambda(50.0) == pytest.approx(0.25, rel=1e-12)
    assert wiener_lambda(30.0, signal_scale=60.0) == pytest.approx(0.25, rel=1e-12)
    assert MIN_LAMBDA == 1e-3 and wiener_lambda(1.0) == MIN_LAMBDA  # (0.01)^2 is below the floor
    assert wiener_lambda(None) == wiener_lambda(float("nan")) == pytest.approx(0.04, rel=1e-12)  # 20 HU default


def test_clean_chain_wiener_prior_is_the_validated_choice(monkeypatch):
    """The clean chain's prior is the one scripts/choose_wiener_signal.py chose, as recorded in the classical
    card, read when the chain runs (the script sets each candidate on the module); the target texture keeps
    the general prior (its noise is kept, so only a cap against blow-up)."""
    import json

    from CTNormalizeLib.classical import mtf_ratio
    from CTNormalizeLib.resources import resources_dir

    card = json.loads((resources_dir() / "Methods" / "classical.json").read_text(encoding="utf-8"))
    record = card["validation"]["wiener_signal_hu"]
    chosen = mtf_ratio.CLEAN_CHAIN_SIGNAL_SCALE_HU
    assert chosen == record["chosen_hu"] and chosen in record["candidates_hu"]
    scores = record["figures"]["pooled_gap_closed"]
    assert record["chosen_hu"] in (record["was_hu"], record["figures"]["best"])
    assert max(scores.values()) == scores[f"{record['figures']['best']:g}"]
    assert mtf_ratio.chain_signal_scale("clean") == chosen
    assert mtf_ratio.chain_signal_scale("target") == SIGNAL_SCALE_HU
    monkeypatch.setattr(mtf_ratio, "CLEAN_CHAIN_SIGNAL_SCALE_HU", 50.0)
    assert mtf_ratio.chain_signal_scale("clean") == 50.0


def test_the_chain_kernel_step_uses_the_texture_prior(truth):
    """smooth -> sharp on a noisy scan: the clean chain's kernel step is regularized with the clean prior, the
    target texture's with the general one, as the run report records."""
    from CTNormalizeLib.classical import mtf_ratio

    hu, sp = scan(truth, SP, "smooth", 0.25, 2.0, seed=3)
    vol = Volume(hu, sp, meta={"Modality": "CT"})
    for texture in ("clean", "target"):
        out = normalize(vol, "kernel=smooth,dose=0.25,thickness=2", "kernel=sharp,dose=0.25,thickness=2",
                        method="classical", texture=texture)
        step = next(s for s in out.report().steps if s["method"] == "mtf_ratio")
        assert step["parameters"]["wiener_signal_hu"] == mtf_ratio.chain_signal_scale(texture)


def test_convert_kernel_takes_lambda_from_the_noise(truth):
    x = truth[:2]
    by_noise = convert_kernel(x, SP, "smooth", "very-sharp", noise_std=30.0)
    np.testing.assert_array_equal(by_noise, convert_kernel(x, SP, "smooth", "very-sharp", lam=0.09))
    assert not np.allclose(by_noise, convert_kernel(x, SP, "smooth", "very-sharp", lam=0.3), atol=1.0)


@pytest.mark.parametrize("source, target", [("smooth", "very-sharp"), ("standard", "very-sharp"), ("smooth", "sharp")])
@pytest.mark.parametrize("lam", [0.01, 0.04, 0.25])
def test_mtf_ratio_gain_is_capped_by_the_wiener_term(source, target, lam):
    """Where the plain ratio exceeds 1, ``H <= max(1, M_t M_s / (M_s^2 + lam)) <= max(1, max M_t / (2 sqrt(lam)))``."""
    f = np.linspace(0.0, 2.0, 2001)
    h = mtf_ratio_transfer(source, target, lam)(f)
    ms, mt = kernel_mtf(source, f), kernel_mtf(target, f)
    ratio = mt / np.maximum(ms, 1e-12)
    cap = max(1.0, float(mt.max()) / (2.0 * np.sqrt(lam)))
    assert h.max() <= cap + 1e-9 and ratio.max() > 1e3 * cap  # the uncapped ratio would blow up
    np.testing.assert_allclose(h[ratio <= 1.0], ratio[ratio <= 1.0], rtol=1e-9)  # smoothing: the plain ratio
    boost = (ratio > 1.0) & (ms > 1e-12)  # where the source has no signal left, H is 0
    assert np.all(h <= np.maximum(ratio, 1.0) + 1e-9) and np.all(h[boost] >= 1.0) and np.all(h[ms <= 1e-12] == 0)


def test_sharp_to_smooth_matches_direct_smooth(truth):
    sharp, sp = scan(truth, SP, "sharp", 1.0, 1.0, full_dose_noise=0.0)
    smooth, _ = scan(truth, SP, "smooth", 1.0, 1.0, full_dose_noise=0.0)
    conv = convert_kernel(sharp, sp, "sharp", "smooth")
    assert np.mean(np.abs(conv - smooth)) < 0.05 * np.mean(np.abs(sharp - smooth))


def test_z_grid_convention():
    assert target_slice_count(10, 2.0, 1.0) == 19
    assert target_slice_count(10, 1.0, 2.0) == 5
    assert target_slice_count(7, 1.25, 2.5) == 4
    x = np.random.default_rng(0).normal(size=(10, 4, 4)).astype(np.float32)
    r = change_thickness(x, (2.0, 1, 1), 2.0, 1.0, 1.0)
    assert r.hu.shape == (19, 4, 4)
    np.testing.assert_allclose(r.hu[::2], x, atol=1e-4)  # the spline passes through the input slices


def test_thin_to_thick_matches_direct_thick_scan(truth):
    thin, sp_thin = scan(truth, SP, "standard", 1.0, 1.0, full_dose_noise=0.0)
    thick, sp_thick = scan(truth, SP, "standard", 1.0, 3.0, full_dose_noise=0.0)
    r = change_thickness(thin, sp_thin, 1.0, 3.0)
    assert r.z_spacing == 3.0 and r.hu.shape == thick.shape and not r.warnings
    naive = thin[::3]
    n = thick.shape[0] - 1  # the last slice sees the volume edge differently
    err = np.mean(np.abs(r.hu[:n] - thick[:n]))
    assert err < 0.15 * np.mean(np.abs(naive[:n] - thick[:n]))


def test_thick_to_thin_warns(truth):
    thick, sp = scan(truth, SP, "standard", 1.0, 2.0, full_dose_noise=0.0)
    r = change_thickness(thick, sp, 2.0, 1.0)
    assert r.z_spacing == 1.0
    assert r.hu.shape[0] == target_slice_count(thick.shape[0], 2.0, 1.0)
    assert any(w["code"] == "THICK_TO_THIN_INTERPOLATION" and "not recovered" in w["message"] for w in r.warnings)


def test_histogram_matching_matches_quantiles(truth):
    a, sp = scan(truth, SP, "sharp", 0.25, 1.0, seed=1)
    b, _ = scan(truth, SP, "smooth", 1.0, 1.0, seed=2)
    ma, mb = body_mask(a), body_mask(b)
    out = match_histogram(a, b, ma, mb)
    q = np.linspace(0.01, 0.99, 25)
    assert np.allclose(np.quantile(out[ma], q), np.quantile(b[mb], q), atol=2.0)
    assert not np.allclose(np.quantile(a[ma], q), np.quantile(b[mb], q), atol=2.0)
    assert np.array_equal(out[~ma], a[~ma])


@pytest.mark.parametrize("method", ["nlm", "gaussian"])
def test_denoise_reaches_target_noise_without_bias(method):
    rng = np.random.default_rng(5)
    x = np.zeros((8, 96, 96), np.float32)
    x[:, 20:76, 20:76] = 40.0
    noisy = x + rng.normal(0, 40, x.shape).astype(np.float32)
    out, info = denoise_volume(noisy, (1, 0.7, 0.7), target_std=20.0, noise_std=40.0, method=method)
    core = (slice(None), slice(30, 66), slice(30, 66))
    sd = out[core].std()
    assert 12.0 < sd < 30.0, info
    assert abs(out[core].mean() - 40.0) < 3.0
    assert info["method"] == method and info["strength"] > 0


def test_frequency_decomposition_matches_band_energies(truth):
    a, sp = scan(truth, SP, "sharp", 0.5, 1.0, seed=1)
    b, _ = scan(truth, SP, "smooth", 1.0, 1.0, seed=2)
    ma, mb = lung_mask(a, sp), lung_mask(b, sp)
    assert ma.sum() > 1000 and mb.sum() > 1000
    ref = band_energies(b, sp, mb)
    out, info = normalize_bands(a, sp, ref, ma)
    got = band_energies(out, sp, ma)
    np.testing.assert_allclose(got.std, ref.std, rtol=0.15)
    assert np.mean(np.abs(out - b)) < np.mean(np.abs(a - b))


def _pair(truth, seed=0):
    src, ssp = scan(truth, SP, "sharp", 0.25, 2.0, seed=seed + 1)
    tgt, tsp = scan(truth, SP, "smooth", 1.0, 1.0, seed=seed + 2)
    rep, _ = scan(truth, SP, "smooth", 1.0, 1.0, seed=seed + 3)
    return Volume(src, spacing=ssp, origin=(1.0, 2.0, 3.0)), tgt, rep


def test_chain_closes_gap_and_leaves_input(truth):
    vol, tgt, rep = _pair(truth)
    before = vol.hu.copy()
    S, T = parse_spec("kernel=sharp,dose=0.25,thickness=2"), parse_spec("kernel=smooth,dose=1,thickness=1")
    seen = []
    res = normalize_classical(vol, S, T, progress=lambda s, f: seen.append((s, f)))
    assert np.array_equal(vol.hu, before)
    out = res.volume
    assert out is not vol and out.spacing[0] == 1.0 and out.origin == vol.origin
    assert out.shape[0] == target_slice_count(vol.shape[0], 2.0, 1.0)
    assert [s["method"] for s in res.steps if s["done"]] == ["denoise", "mtf_ratio", "z_profile"]
    assert any(w["code"] == "THICK_TO_THIN_INTERPOLATION" for w in res.warnings)
    assert {s for s, _ in seen} >= {"denoise", "mtf_ratio", "z_profile"}
    assert all(0.0 <= f <= 1.0 for _, f in seen)
    base = change_thickness(vol.hu, vol.spacing, 2.0, 2.0, 1.0).hu
    n = min(len(base), len(tgt), len(out.hu))
    l1 = lambda a: float(np.mean(np.abs(a[:n] - tgt[:n])))  # noqa: E731
    gap = (l1(base) - l1(out.hu)) / (l1(base) - l1(rep))
    assert gap > 0.5, (l1(base), l1(out.hu), l1(rep))


def test_chain_skips_what_is_not_needed(truth):
    vol, _, _ = _pair(truth)
    S = parse_spec("kernel=sharp,dose=0.25,thickness=2")
    res = normalize_classical(vol, S, S)
    assert [s["method"] for s in res.steps if s["done"]] == []
    assert np.array_equal(res.volume.hu, vol.hu) and res.volume.hu is not vol.hu
    assert all(s.get("note") for s in res.steps)


def test_single_methods_run_and_record(truth):
    vol, tgt, _ = _pair(truth)
    S, T = parse_spec("kernel=sharp,dose=0.25,thickness=2"), parse_spec("kernel=smooth,dose=1,thickness=2")
    ref = Volume(scan(truth, SP, "smooth", 1.0, 2.0, seed=9)[0], spacing=vol.spacing)
    assert set(CLASSICAL_METHODS) >= {"classical", "mtf_ratio", "frequency_decomposition", "histogram_match",
                                      "denoise", "z_profile"}
    for m in CLASSICAL_METHODS:
        out = normalize(vol, S, T, method=m, reference=ref, texture="target")
        assert out.plan.method == m and out.volume.shape == vol.shape
        assert out.result.steps and out.report().method == m


def test_bad_inputs(truth):
    vol, _, _ = _pair(truth)
    S, T = parse_spec("kernel=sharp,dose=0.25,thickness=2"), parse_spec("kernel=smooth,dose=1,thickness=1")
    with pytest.raises(BadInputError, match="histogram_match"):
        normalize_classical(vol, S, T, method="nope")
    # the target's missing fields are not normalized: same dose, same thickness
    res = normalize_classical(vol, S, parse_spec("kernel=smooth"))
    assert [s["method"] for s in res.steps if s["done"]] == ["mtf_ratio"]
    with pytest.raises(BadInputError, match="reference"):
        normalize_classical(vol, S, T, method="histogram_match")


def test_thick_to_thin_never_rings_beyond_the_neighbouring_slices():
    """A 5 mm scan with sharp z edges (air above tissue, a dense clip) made 1 mm thick: the partial
    deconvolution and the spline must not invent values below air or above the clip."""
    from CTNormalizeLib.classical.thickness import Z_RESTORE_LAMBDA

    rng = np.random.default_rng(0)
    hu = np.full((12, 8, 8), -1000.0, np.float32)
    hu[5:] = 40.0
    hu[8, 3:5, 3:5] = 3000.0
    hu += rng.normal(0, 2, hu.shape).astype(np.float32)
    r = change_thickness(hu, (5.0, 0.7, 0.7), 5.0, 1.0, restore_lambda=Z_RESTORE_LAMBDA, limit_margin=0.0)
    assert r.hu.min() >= hu.min() - 1e-3 and r.hu.max() <= hu.max() + 1e-3
    # each output slice stays within the source slices around it (one more on each side)
    for j, zz in enumerate(np.arange(r.hu.shape[0]) * 1.0 / 5.0):
        ks = np.clip([int(np.floor(zz + 1e-6)) - 1, int(np.ceil(zz - 1e-6)) + 1], 0, 11)
        near = hu[ks[0]:ks[1] + 1]
        assert np.all(r.hu[j] >= near.min(0) - 1e-3) and np.all(r.hu[j] <= near.max(0) + 1e-3)
    assert r.info["limited_to_neighbours_fraction"] > 0  # there was ringing to stop
    wide = change_thickness(hu, (5.0, 0.7, 0.7), 5.0, 1.0, restore_lambda=Z_RESTORE_LAMBDA, limit_margin=30.0)
    assert hu.min() - 30.0 - 1e-3 <= wide.hu.min()
    free = change_thickness(hu, (5.0, 0.7, 0.7), 5.0, 1.0, restore_lambda=Z_RESTORE_LAMBDA)  # no limit
    assert free.hu.min() < hu.min() - 100.0 and free.info["limited_to_neighbours_fraction"] is None


def test_the_chain_limits_thick_to_thin_by_its_noise():
    """The z step passes 3 sigma of the chain's noise as the margin; a non-finite noise falls back to a measured one."""
    from types import SimpleNamespace

    from CTNormalizeLib.classical.thickness import LIMIT_SIGMAS, z_step

    hu = np.full((12, 16, 16), -1000.0, np.float32)
    hu[5:] = 40.0
    for noise in (10.0, float("nan"), None):
        state = SimpleNamespace(hu=hu.copy(), spacing=(5.0, 0.7, 0.7), thickness=5.0, noise_hu=noise, warnings=[],
                                steps=[])
        state.record = lambda step, done, params, note, st=state: st.steps.append(params)  # noqa: E731
        plan = SimpleNamespace(target_signature=SimpleNamespace(thickness_mm=1.0, spacing_mm=1.0))
        z_step(state, plan)
        margin = state.steps[-1]["limit_margin_hu"]
        assert np.isfinite(margin) and margin >= 0
        if noise == 10.0:
            assert margin == LIMIT_SIGMAS * 10.0
        assert state.hu.min() >= -1000.0 - margin - 1e-3


def test_a_target_texture_noisier_than_the_target_warns():
    from types import SimpleNamespace

    from CTNormalizeLib.classical.noise_insertion import NOISIER_THAN_TARGET, texture_step
    from CTNormalizeLib.classical.state import ChainState
    from CTNormalizeLib.signature.kernel_class import as_transfer

    hu = disk_phantom((4, 96, 96), (2.0, 0.8, 0.8))
    noisy = hu + np.random.default_rng(2).normal(0, 20, hu.shape).astype(np.float32)
    from CTNormalizeLib.signature.measure import measure_noise_hu

    have = measure_noise_hu(noisy, (2.0, 0.8, 0.8), as_transfer("standard"))
    for want, warned in ((have / 1.3, True), (have / 1.05, False)):
        sigma = have
        plan = SimpleNamespace(texture="target", target_signature=SimpleNamespace(noise_hu=want, transfer=as_transfer("standard")),
                               source_signature=SimpleNamespace(air_to_tissue=0.5))
        st = ChainState(hu=noisy.copy(), spacing=(2.0, 0.8, 0.8), transfer=None, noise_hu=sigma, thickness=2.0)
        texture_step(st, plan)
        assert (NOISIER_THAN_TARGET in {w["code"] for w in st.warnings}) is warned
        np.testing.assert_array_equal(st.hu, noisy)  # nothing added, nothing taken out


def test_kernel_step_caps_gains_no_class_conversion_needs():
    """A measured source transfer far smoother than any kernel class (as read in tissue on a crop without air)
    asks for ~9x at mid frequencies; the step caps it at 1.5x the class envelope and says so. A conversion between
    two classes is untouched."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_quantify import synthetic_chest

    from CTNormalizeLib.classical.mtf_ratio import GAIN_ENVELOPE_MARGIN, class_gain_envelope, kernel_step
    from CTNormalizeLib.classical.state import start
    from CTNormalizeLib.plan import make_plan
    from CTNormalizeLib.signature.kernel_class import class_transfer
    from CTNormalizeLib.signature.transfer import Transfer

    vol, _ = synthetic_chest(shape=(6, 96, 96), spacing=(2.0, 1.0, 1.0), noise=20.0, seed=8)
    plan = make_plan(vol, "kernel=smooth,dose=1,thickness=2", "kernel=standard", method="mtf_ratio",
                     kernel_from="labels")
    f = np.linspace(0.0, 0.5, 200)
    lam = wiener_lambda(2.0)  # after a denoise step: little noise, a weak Wiener limit
    assert np.all(mtf_ratio_transfer("smooth", "standard", lam)(f) <= GAIN_ENVELOPE_MARGIN * class_gain_envelope(lam)(f))
    state = start(vol, plan)
    state.noise_hu = 2.0
    kernel_step(state, plan)
    assert not state.warnings and state.steps[-1]["parameters"]["gain_capped"] is False
    bogus = Transfer(f50=0.14, p=2.0)  # a transfer the fit can return (p >= 2) far smoother than any class
    assert mtf_ratio_transfer(bogus, class_transfer("standard"), lam)(f).max() > 5.0
    state = start(vol, plan)
    state.transfer, state.noise_hu = bogus, 2.0
    kernel_step(state, plan)
    (w,) = state.warnings
    assert w["code"] == "KERNEL_GAIN_CAPPED" and "--source kernel=" in w["message"]
    assert state.steps[-1]["parameters"]["gain_capped"] is True
    assert np.abs(state.hu - vol.hu).max() < 3000.0


def test_a_within_class_harmonization_that_moves_coarse_contrast_says_so(pyradiomics_data):
    """An edge-enhanced kernel (lift 0.6) reads as a class whose nominal curve has no lift; converting it to
    that curve changes coarse contrast, which moves the emphysema index: the warning says so, and its advice
    keeps the source's kernel. lung1 binned 2 x 2 once did this (a cusped fit, p = 1: coarse contrast +15 %,
    emphysema index 3.8 -> 7.0 %); with the fit's p >= 2 bound it changes coarse contrast by ~1 % and, like
    full-resolution lung1, gets no warning."""
    from CTNormalizeLib import Volume, read_volume
    from CTNormalizeLib.classical.noise_insertion import shaped_noise
    from CTNormalizeLib.normalization import normalize
    from CTNormalizeLib.signature import Transfer, measure_signature

    def within(out):
        return [w for w in out.warnings if w["code"] == "KERNEL_WITHIN_CLASS_GAIN"]

    y, x = np.mgrid[:256, :256] / 128.0 - 1.0
    hu = np.where((x / 0.75) ** 2 + (y / 0.55) ** 2 < 1, 40.0, -1000.0).astype(np.float32)
    hu = np.repeat(hu[None], 8, axis=0)
    sp = (1.0, 0.7, 0.7)
    lifted = Volume(hu + np.float32(20.0) * shaped_noise(hu.shape, sp, Transfer(0.3, 2.0, 0.6), seed=4), sp)
    reads = measure_signature(lifted).kernel
    out = normalize(lifted, target=f"kernel={reads}", method="mtf_ratio")
    (w,) = within(out)
    assert f"--source kernel={reads} --kernel-from labels" in w["message"]
    kept = normalize(lifted, source=f"kernel={reads}", target=f"kernel={reads}", method="mtf_ratio",
                     kernel_from="labels")
    assert not within(kept) and not [s for s in kept.result.steps if s["method"] == "mtf_ratio" and s["done"]]

    vol = read_volume(pyradiomics_data / "lung1_image.nrrd")

    def binned(k):
        h = vol.hu[16:32]
        z, ny, nx = h.shape
        b = h.reshape(z, ny // k, k, nx // k, k).mean(axis=(2, 4)).astype(np.float32)
        return Volume(b, (vol.spacing[0], vol.spacing[1] * k, vol.spacing[2] * k))

    for k in (1, 2):
        assert not within(normalize(binned(k), target="kernel=smooth", method="mtf_ratio"))


def test_thick_to_thin_noise_gain_is_what_the_z_step_does_to_noise():
    """Noise made as the scanner makes it (white along z, then a 5 mm Gaussian slice profile, sampled every
    5 mm) taken to 1 mm by the z step: its std grows by the predicted gain (> 1: the partial deconvolution
    lifts more than the spline lowers); thin -> thick and equal thickness predict no thick -> thin gain."""
    from CTNormalizeLib.classical.thickness import Z_RESTORE_LAMBDA, change_thickness, thick_to_thin_noise_gain

    noise, sp = scan(np.zeros((240, 48, 48), np.float32), (0.5, 0.8, 0.8), "standard", 1.0, 5.0, 5.0, seed=3)
    out = change_thickness(noise, sp, 5.0, 1.0, 1.0, restore_lambda=Z_RESTORE_LAMBDA).hu
    n = out.shape[0]
    measured = float(np.std(out[n // 8: n - n // 8]) / np.std(noise[3:-3]))
    predicted = thick_to_thin_noise_gain(5.0, 5.0, 1.0, 1.0)
    assert predicted > 1.05
    assert measured == pytest.approx(predicted, rel=0.04)
    assert thick_to_thin_noise_gain(1.0, 1.0, 3.0) == thick_to_thin_noise_gain(2.0, 2.0, 2.0) == 1.0


def test_thick_to_thin_noise_is_booked_and_predicted_with_the_gain():
    """The target texture's denoising aims at the noise after the kernel and z steps: for 5 mm -> 1 mm the
    prediction includes the z step's gain, and the z step books it (lung2, classical chain: the output's
    noise was 16 % above the target's without it, 5 % with it)."""
    from types import SimpleNamespace

    from CTNormalizeLib.classical.state import predicted_noise
    from CTNormalizeLib.classical.thickness import thick_to_thin_noise_gain, z_step
    from CTNormalizeLib.plan import make_plan

    gain = thick_to_thin_noise_gain(5.0, 5.0, 1.0, 1.0)
    assert gain > 1.05
    truth = disk_phantom((120, 96, 96), (0.5, 0.8, 0.8), seed=4)
    hu, sp = scan(truth, (0.5, 0.8, 0.8), "standard", 0.25, 5.0, 5.0, seed=5)
    plan = make_plan(Volume(hu, sp, meta={"Modality": "CT"}), "kernel=standard,dose=0.25,thickness=5",
                     "kernel=standard,dose=1,thickness=1", method="classical", texture="target")
    sigma = plan.source_signature.noise_hu
    assert predicted_noise(plan) == pytest.approx(gain * sigma, rel=0.02)  # same kernel: the z step alone
    weak = thick_to_thin_noise_gain(5.0, 5.0, 1.0, 1.0, restore_lambda=1.0)  # the z step's option, if given
    assert weak < gain and predicted_noise(plan, z_restore_lambda=1.0) == pytest.approx(weak * sigma, rel=0.02)
    state = SimpleNamespace(hu=hu.copy(), spacing=sp, thickness=5.0, noise_hu=10.0, warnings=[], steps=[])
    state.record = lambda step, done, params, note, st=state: st.steps.append(params)  # noqa: E731
    z_step(state, SimpleNamespace(target_signature=SimpleNamespace(thickness_mm=1.0, spacing_mm=1.0)))
    assert state.noise_hu == pytest.approx(10.0 * gain, rel=1e-9)
