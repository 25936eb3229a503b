"""The learned blind denoiser: domain-randomized noise fields, its recipe (resumable, packaged) and its row.

The shipped ctn-denoise-v1 is judged by the benchmarks (README); here the pieces are
checked on tiny networks: the noise has the std and spectrum drawn, training resumes
exactly, the package is a valid card, and the chain runs with the network as its noise
step (clean texture: told the measured noise; target texture: calibrated like NLM).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from CTNormalizeLib.train import noise_fields as nf
from reliability import chest

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parents[2]


def _high_fraction(field):
    p = np.abs(np.fft.fft2(field)) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(field.shape[0]), np.fft.fftfreq(field.shape[1]), indexing="ij"))
    return float(p[f > 0.3].sum() / p.sum())


def _phys(**kw):
    base = dict(sigma_hu=40.0, window="ramp", cutoff=0.5, blur=5.0, ramp_power=1.0, low_floor=0.0,
                anisotropy=0.0, angle=0.0, amplitude_log_std=0.0)
    base.update(kw)
    return nf.NoisePhysics(**base)


def test_noise_field_has_the_drawn_std_and_spectrum():
    rng = np.random.default_rng(0)
    ramp = nf.noise_field(_phys(), 256, rng)
    hann = nf.noise_field(_phys(window="hann"), 256, rng)
    assert ramp.dtype == np.float32
    assert abs(float(ramp.std()) - 40.0) < 1.0 and abs(float(hann.std()) - 40.0) < 1.0
    # a Hann window removes the high frequencies a plain ramp keeps
    assert _high_fraction(hann) < 0.5 * _high_fraction(ramp)
    # non-stationary amplitude keeps the overall std
    nonstat = nf.noise_field(_phys(amplitude_log_std=0.35), 256, rng)
    assert abs(float(nonstat.std()) - 40.0) < 4.0


def test_anisotropy_puts_more_power_along_one_direction():
    f = nf.noise_field(_phys(anisotropy=0.6, angle=0.0), 256, np.random.default_rng(1))
    p = np.abs(np.fft.fft2(f)) ** 2
    # angle 0: power along the fx axis (frequency varying across x) exceeds the fy axis
    assert p[0, 1:40].sum() > 2.0 * p[1:40, 0].sum()


def test_windows_start_at_one_and_close_at_the_cutoff():
    f = np.array([0.0, 0.25, 0.5])
    for name in nf.WINDOWS:
        w = nf.window(name, f, 0.5)
        assert w[0] == pytest.approx(1.0)
        assert np.all(np.diff(w) <= 1e-12), name
    assert nf.window("hann", f, 0.5)[-1] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        nf.window("nope", f, 0.5)


def test_draws_stay_in_their_ranges_and_conditioning_has_errors():
    from CTNormalizeLib.models.conditioning import DENOISE_FEATURES

    r = nf.NoiseRanges()
    rng = np.random.default_rng(3)
    draws = [nf.draw_physics(rng, r) for _ in range(200)]
    assert all(r.sigma_hu[0] <= d.sigma_hu <= r.sigma_hu[1] for d in draws)
    assert {d.window for d in draws} == set(nf.WINDOWS)
    c1 = nf.conditioning(draws[0], np.random.default_rng(1), r)
    c2 = nf.conditioning(draws[0], np.random.default_rng(2), r)
    assert len(c1) == DENOISE_FEATURES and c1 != c2
    exact = nf.conditioning(draws[0], np.random.default_rng(1), nf.NoiseRanges(cond_sigma_error=0.0,
                                                                              cond_freq_error=0.0))
    assert exact[0] == pytest.approx(np.log2(draws[0].sigma_hu / 20.0))


def _fake_bank(path, seed=0):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    vols = [(ndi.gaussian_filter(rng.normal(0, 1, (4, 48, 48)), 3) * 3000.0 - 500.0).astype(np.float32)
            for _ in range(2)]
    arrays = {f"target_{i}": v for i, v in enumerate(vols)}
    arrays["index_json"] = np.frombuffer(json.dumps({"targets": 2, "pairs": []}).encode(), np.uint8)
    np.savez_compressed(path, **arrays)
    return path


def _cfg(**kw):
    from CTNormalizeLib.train.denoiser import DenoiseConfig

    base = dict(steps=3, batch=2, patch=32, width=8, head=4, blocks=1, warmup=1, checkpoint_every=100)
    base.update(kw)
    return DenoiseConfig(**base)


def test_batches_are_a_pure_function_of_seed_and_step(tmp_path):
    from CTNormalizeLib.train.denoiser import clean_slices, make_batch

    vols = clean_slices(_fake_bank(tmp_path / "bank.npz"))
    a, b, c = make_batch(_cfg(), vols, 5), make_batch(_cfg(), vols, 5), make_batch(_cfg(), vols, 6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    noisy, clean, cond = a
    assert noisy.shape == clean.shape == (2, 1, 32, 32) and cond.shape[0] == 2
    assert float(np.abs(noisy - clean).mean()) > 0.001  # noise was added (scaled units)


def test_training_resumes_exactly_and_packages_a_valid_card(tmp_path):
    from safetensors.torch import load_file

    from CTNormalizeLib.contracts.card import card_problems
    from CTNormalizeLib.models.registry import read_package
    from CTNormalizeLib.train.denoiser import train_denoiser

    bank = _fake_bank(tmp_path / "bank.npz")
    full = train_denoiser(_cfg(), bank, tmp_path / "full")
    part = train_denoiser(_cfg(), bank, tmp_path / "part", stop_after=1)
    assert json.loads((part / "card.json").read_text())["recipe"]["steps_done"] == 1
    resumed = train_denoiser(_cfg(), bank, tmp_path / "part")
    a, b = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    card = json.loads((resumed / "card.json").read_text())
    assert card_problems(card) == [] and card["role"] == "denoiser"
    assert card["recipe"]["steps_done"] == 3 and card["training_data"]["noise_ranges"]["sigma_hu"] == [3.0, 150.0]
    assert read_package(resumed).name == "ctn-denoise-v1"


def test_training_refuses_a_missing_bank(tmp_path):
    from CTNormalizeLib.errors import BadInputError
    from CTNormalizeLib.train.denoiser import train_denoiser

    with pytest.raises(BadInputError, match="bank"):
        train_denoiser(_cfg(), tmp_path / "none.npz", tmp_path / "run")


@pytest.fixture
def tiny_denoiser(tmp_path, monkeypatch):
    """A 3-step ctn-denoise-v1 installed in a user model folder."""
    from CTNormalizeLib.train.denoiser import train_denoiser

    from CTNormalizeLib.models import registry

    pkg = train_denoiser(_cfg(), _fake_bank(tmp_path / "bank.npz"), tmp_path / "run",
                         package_dir=tmp_path / "models" / "ctn-denoise-v1")
    # only this folder: the shipped package of the same name would otherwise win
    monkeypatch.setattr(registry, "model_dirs", lambda: [tmp_path / "models"])
    return pkg


def test_the_denoiser_is_a_complete_row_running_the_chain(tiny_denoiser):
    from CTNormalizeLib.methods import method_table
    from CTNormalizeLib.normalization import normalize
    from CTNormalizeLib.volume import Volume

    row = method_table()["ctn-denoise-v1"]
    assert row.kind == "model" and row.complete and row.needs_torch
    vol = Volume(chest((6, 64, 64)), (2.0, 0.8, 0.8))
    before = vol.hu.copy()
    res = normalize(vol, "kernel=sharp,dose=0.25,thickness=2", "kernel=smooth,dose=1,thickness=2",
                    method="ctn-denoise-v1", device="cpu", texture="clean")
    np.testing.assert_array_equal(vol.hu, before)  # the input is not modified
    den = [s for s in res.result.steps if s.get("method") == "denoise" or s.get("step") == "denoise"]
    assert den and den[0]["done"], res.result.steps
    assert den[0]["parameters"]["method"] == "ctn-denoise-v1"
    # clean texture: the network is told the whole measured noise, not calibrated
    assert den[0]["parameters"]["strength"] == pytest.approx(res.plan.source_signature.noise_hu, rel=1e-6)
    assert res.result.model_sha256 == row.card["sha256"]
    assert not np.array_equal(res.volume.hu, vol.hu) and np.isfinite(res.volume.hu).all()
    assert row.card["sha256"] == json.loads((tiny_denoiser / "card.json").read_text())["sha256"]  # the tiny one ran
    assert "ctn-denoise-v1" in res.volume.meta["ctnormalize"]


def test_target_texture_calibrates_the_network_strength(tiny_denoiser):
    from CTNormalizeLib.normalization import normalize
    from CTNormalizeLib.volume import Volume

    vol = Volume(chest((6, 64, 64)), (2.0, 0.8, 0.8))
    res = normalize(vol, "kernel=standard,dose=0.1,thickness=2", "kernel=standard,dose=1,thickness=2",
                    method="ctn-denoise-v1", device="cpu", texture="target")
    den = [s for s in res.result.steps if s.get("method") == "denoise" or s.get("step") == "denoise"]
    assert den and "calibration" in den[0]["parameters"]


def test_stack_denoiser_calibration_reaches_the_wanted_noise():
    """A StackDenoiser whose strength is a Gaussian's width is calibrated like NLM's h."""
    from scipy import ndimage as ndi

    from CTNormalizeLib.classical.denoise import StackDenoiser, denoise_volume

    def blur(stack, strength):
        return np.stack([ndi.gaussian_filter(s, strength / 20.0) for s in stack])

    rng = np.random.default_rng(0)
    hu = (rng.normal(0, 40, (4, 96, 96))).astype(np.float32)
    out, info = denoise_volume(hu, (1.0, 0.7, 0.7), target_std=20.0, noise_std=40.0,
                               method=StackDenoiser("blur", blur), kernel="standard")
    assert info["method"] == "blur"
    cal = info["calibration"]
    assert cal["measured_after"] == pytest.approx(cal["wanted"], rel=0.1)
    fixed, info2 = denoise_volume(hu, (1.0, 0.7, 0.7), target_std=20.0, noise_std=40.0,
                                  method=StackDenoiser("blur", blur), strength=20.0)
    np.testing.assert_allclose(fixed, blur(hu, 20.0), atol=1e-5)
    assert info2["blend"] == 1.0


def _radial_nps(fields):
    p = (np.abs(np.fft.fft2(fields)) ** 2).mean(0)
    n = fields.shape[-1]
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    bins = np.linspace(0.02, 0.5, 13)
    return np.array([p[(f >= a) & (f < b)].mean() for a, b in zip(bins[:-1], bins[1:])])


@pytest.mark.parametrize("window", ["ramp", "hann", "shepp-logan", "butterworth"])
def test_torch_noise_fields_match_the_numpy_reference(window):
    """The GPU path draws noise with torch: its std and radial NPS agree with the numpy reference within 10 %."""
    phys = _phys(window=window, cutoff=0.35, blur=0.6, anisotropy=0.3, angle=0.7, amplitude_log_std=0.2)
    rng = np.random.default_rng(0)
    ref = np.stack([nf.noise_field(phys, 64, rng) for _ in range(200)])
    gen = torch.Generator().manual_seed(0)
    got = nf.noise_fields_torch([phys] * 200, 64, gen).numpy()
    assert got.shape == ref.shape and got.dtype == np.float32
    assert float(got.std()) == pytest.approx(float(ref.std()), rel=0.05)
    a, b = _radial_nps(ref), _radial_nps(got)
    keep = a > 1e-2 * a.max()  # bands holding the noise (not the leakage past the cut-off)
    np.testing.assert_allclose(b[keep], a[keep], rtol=0.10)


def test_the_gpu_recipe_path_resumes_exactly_on_the_cpu(tmp_path):
    """noise="torch" (what the GPU recipe uses) run on torch's CPU device: batches and resume are exact."""
    from safetensors.torch import load_file

    from CTNormalizeLib.train.denoiser import clean_slices, make_batch_torch, train_denoiser

    bank = _fake_bank(tmp_path / "bank.npz")
    vols = clean_slices(bank)
    a, b = make_batch_torch(_cfg(noise="torch"), vols, 4, "cpu"), make_batch_torch(_cfg(noise="torch"), vols, 4, "cpu")
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert a[0].shape == (2, 1, 32, 32) and not torch.equal(a[0], a[1])
    full = train_denoiser(_cfg(noise="torch"), bank, tmp_path / "full", device="cpu")
    train_denoiser(_cfg(noise="torch"), bank, tmp_path / "part", stop_after=2, device="cpu")
    resumed = train_denoiser(_cfg(noise="torch"), bank, tmp_path / "part", device="cpu")
    wa, wb = load_file(str(full / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_cli_trains_the_denoise_recipe_in_pieces(tmp_path):
    from scipy import ndimage as ndi

    from CTNormalizeLib.cli.main import main

    rng = np.random.default_rng(0)
    vol = (ndi.gaussian_filter(rng.normal(0, 1, (2, 132, 132)), 3) * 3000.0 - 500.0).astype(np.float32)
    bank = tmp_path / "bank.npz"
    np.savez_compressed(bank, target_0=vol, index_json=np.frombuffer(json.dumps({"targets": 1}).encode(), np.uint8))
    run = tmp_path / "run"
    assert main(["train", "--recipe", "denoise", "-o", str(run), "--bank", str(bank), "--steps", "2"]) == 0
    card = json.loads((run / "package" / "ctn-denoise-v1" / "card.json").read_text())
    assert card["recipe"]["steps_done"] == 2 and card["recipe"]["device"] == "cpu"
    assert main(["train", "--recipe", "denoise", "-o", str(run), "--bank", str(bank), "--steps", "3"]) == 0
    card = json.loads((run / "package" / "ctn-denoise-v1" / "card.json").read_text())
    assert card["recipe"]["steps_done"] == 3  # resumed from the checkpoint at step 2
    assert main(["train", "--recipe", "denoise", "-o", str(run), "--bank", str(bank), "--device", "nope"]) != 0


@pytest.mark.parametrize("recipe, own_seed, starts_from", [("denoise-v2b", 1, "ctn-denoise-v2"),
                                                              ("denoise-v2c", 2, "ctn-denoise-v2b"),
                                                              ("denoise-v2d", 3, "ctn-denoise-v2c")])
def test_continued_denoisers_keep_their_own_seed_unless_told(tmp_path, recipe, own_seed, starts_from):
    """denoise-v2b continues ctn-denoise-v2 on fresh batches (seed 1 by default: seed 0 would replay v2's
    batches), denoise-v2c continues v2b (seed 2), denoise-v2d continues v2c (seed 3); an explicit --seed wins; both end up in the card's command."""
    from scipy import ndimage as ndi

    from CTNormalizeLib.cli.main import main

    rng = np.random.default_rng(0)
    vol = (ndi.gaussian_filter(rng.normal(0, 1, (4, 132, 132)), 3) * 3000.0 - 500.0).astype(np.float32)
    bank = tmp_path / "bank.npz"
    np.savez_compressed(bank, target_0=vol, index_json=np.frombuffer(json.dumps({"targets": 1}).encode(), np.uint8))
    for extra, seed in (([], own_seed), (["--seed", "7"], 7)):
        run = tmp_path / f"run{seed}"
        assert main(["train", "--recipe", recipe, "-o", str(run), "--bank", str(bank), "--steps", "1",
                     *extra]) == 0
        card = json.loads((run / "package" / recipe.replace("denoise", "ctn-denoise") / "card.json").read_text())
        assert card["hyperparameters"]["seed"] == seed and card["recipe"]["starts_from"] == starts_from
        # a continued model starts from its parent's chain too (blend, residual, flips), which the choice then keeps
        # unless beaten by more than a standard error
        parent = json.loads((ROOT / "Resources" / "Models" / starts_from / "card.json").read_text())
        assert card["chain"]["inherited_from"] == starts_from
        assert {k: card["chain"][k] for k in ("nlm_blend", "nlm_residual", "flips")} == \
            {k: parent["chain"][k] for k in ("nlm_blend", "nlm_residual", "flips")}
        assert f"--seed {seed}" in card["recipe"]["command"] and f"--seed {seed}" in card["recipe"]["gpu_recipe"]["command"]


def test_models_listing_says_what_the_denoiser_is(tiny_denoiser):
    from CTNormalizeLib.cli.cmd_models import collect, format_text

    text = format_text(collect())
    assert "ctn-denoise-v1" in text and "learned denoiser is its noise step" in text
    card_path = tiny_denoiser / "card.json"
    card = json.loads(card_path.read_text())
    card["chain"] = {"nlm_blend": {"noise_only": 0.5, "kernel_change": 0.4}, "nlm_residual": {"noise_only": 0.45}}
    card_path.write_text(json.dumps(card))
    text = format_text(collect())
    assert "NLM's share" in text and "dose only 0.5, NLM leaving 45% of the noise" in text
    assert "kernel change 0.4" in text
    card["chain"] = {"nlm_blend": 0.3, "nlm_residual": 0.2}  # one number for every kind
    card_path.write_text(json.dumps(card))
    text = format_text(collect())
    assert "kernel change 0.3, NLM leaving 20% of the noise; dose only 0.3, NLM leaving 20%" in text
    card["chain"] = {"nlm_blend": 0.3, "nlm_residual": 0.2, "nlm_residual_choice": {"noise_only": "risk"}}
    card_path.write_text(json.dumps(card))
    text = format_text(collect())
    assert ("kernel change 0.3, NLM leaving 20% of the noise; dose only 0.3, NLM's residual picked for each scan"
            in text)


def test_the_gpu_pack_keeps_whole_volumes_within_budget_and_never_overwrites_the_bank(tmp_path):
    import importlib.util
    from pathlib import Path

    from CTNormalizeLib.train.denoiser import clean_slices

    spec = importlib.util.spec_from_file_location(
        "pack_denoise_bank", Path(__file__).resolve().parents[2] / "scripts" / "pack_denoise_bank.py")
    pack = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pack)
    bank = _fake_bank(tmp_path / "bank.npz")
    assert pack.main([str(bank), str(tmp_path / "p.npz"), "--budget-mb", "10"]) == 0
    vols = clean_slices(tmp_path / "p.npz")
    ref = clean_slices(bank)
    assert len(vols) == 2 and np.abs(vols[0] - ref[0]).max() <= 0.5  # int16 HU
    assert pack.main([str(bank), str(tmp_path / "q.npz"), "--budget-mb", "0.000001"]) == 2
    assert not (tmp_path / "q.npz").exists()
    before = bank.read_bytes()
    assert pack.main([str(bank), str(bank)]) == 2 and bank.read_bytes() == before


def test_the_network_runs_on_the_body_and_leaves_the_air_around_it(tiny_denoiser):
    from CTNormalizeLib.inference.net_denoise import stack_denoiser
    from CTNormalizeLib.models.registry import read_package
    from CTNormalizeLib.signature.kernel_class import as_transfer

    hu = chest((3, 160, 160))  # the body's outline is 13 px from the top
    den = stack_denoiser(read_package(tiny_denoiser), as_transfer("standard"), 0.8)
    out = den.fn(hu, 30.0)
    assert out.shape == hu.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :2, :], hu[:, :2, :])  # air far outside the body: untouched
    assert not np.allclose(out[:, 70:90, 70:90], hu[:, 70:90, 70:90])  # the body was denoised
    noise = np.random.default_rng(0).normal(0, 30, (2, 64, 64)).astype(np.float32)  # no body: all of it
    assert not np.allclose(den.fn(noise, 30.0)[:, :3], noise[:, :3])


def test_the_row_covers_only_the_trained_noise_range(tiny_denoiser):
    from CTNormalizeLib.methods import method_table
    from CTNormalizeLib.plan import make_plan
    from CTNormalizeLib.volume import Volume

    row = method_table()["ctn-denoise-v1"]
    noisy = make_plan(Volume(chest((6, 64, 64)), (2.0, 0.8, 0.8)), "kernel=sharp", "kernel=smooth", method="classical")
    assert row.why_not(noisy) is None
    from dataclasses import replace

    for noise, ok in ((1.0, False), (400.0, False), (40.0, True)):
        plan = replace(noisy, source_signature=replace(noisy.source_signature, noise_hu=noise))
        why = row.why_not(plan)
        assert (why is None) == ok and (ok or "source noise" in why), (noise, why)


def test_a_nan_voxel_stays_local_and_tiny_slices_work(tiny_denoiser):
    from CTNormalizeLib.inference.net_denoise import stack_denoiser
    from CTNormalizeLib.models.registry import read_package
    from CTNormalizeLib.signature.kernel_class import as_transfer

    den = stack_denoiser(read_package(tiny_denoiser), as_transfer("standard"), 0.8)
    hu = chest((2, 96, 96))
    hu[0, 48, 48] = np.nan
    out = den.fn(hu, 30.0)
    assert np.isnan(out[0, 48, 48]) and np.isfinite(out).sum() == out.size - 1
    assert den.fn(np.zeros((1, 3, 9), np.float32), 10.0).shape == (1, 3, 9)


def test_resuming_with_another_configuration_is_refused(tmp_path):
    from CTNormalizeLib.errors import BadInputError
    from CTNormalizeLib.train.denoiser import train_denoiser

    bank = _fake_bank(tmp_path / "bank.npz")
    train_denoiser(_cfg(), bank, tmp_path / "run", stop_after=1)
    with pytest.raises(BadInputError, match="another configuration"):
        train_denoiser(_cfg(batch=3), bank, tmp_path / "run")


def test_cli_refuses_what_the_denoise_recipe_does_not_take(tmp_path):
    from CTNormalizeLib.cli.main import main

    run = tmp_path / "run"
    assert main(["train", "--recipe", "denoise", "-o", str(run), "--bank", str(tmp_path / "typo.npz")]) != 0
    assert not (tmp_path / "typo.npz").exists() and not (run / "package").exists()
    assert main(["train", "--recipe", "denoise", "-o", str(run), "--manifest", str(tmp_path / "m.json")]) != 0
    assert not (run / "package").exists()


def test_reflect_index_mirrors_at_the_volume_ends():
    from CTNormalizeLib.imaging.zgrid import reflect_index

    assert [reflect_index(i, 4) for i in range(-3, 7)] == [3, 2, 1, 0, 1, 2, 3, 2, 1, 0]
    assert [reflect_index(i, 1) for i in (-2, 0, 2)] == [0, 0, 0]


def test_context_batches_see_neighbours_with_their_own_noise(tmp_path):
    """context 3: the centre slice is the target; neighbours carry noise of the same physics, partly shared."""
    from CTNormalizeLib.train.denoiser import _mixed, clean_slices, make_batch, make_batch_torch

    vols = clean_slices(_fake_bank(tmp_path / "bank.npz"))
    cfg = _cfg(context=3, batch=24, copy_prob=0.2)
    noisy, clean, cond = make_batch(cfg, vols, 1)
    assert noisy.shape == (24, 3, 32, 32) and clean.shape == (24, 1, 32, 32) and cond.shape[0] == 24
    centre_noise = noisy[:, 1] - clean[:, 0]
    assert float(np.abs(centre_noise).mean()) > 0.001
    copies = [i for i in range(24) if np.array_equal(noisy[i, 0], noisy[i, 1]) and np.array_equal(noisy[i, 2], noisy[i, 1])]
    assert 0 < len(copies) < 24  # some samples have no neighbours (a one-slice scan), most do
    xt, yt, ct = make_batch_torch(_cfg(context=3, batch=6, noise="torch"), vols, 1, "cpu")
    assert tuple(xt.shape) == (6, 3, 32, 32) and tuple(yt.shape) == (6, 1, 32, 32)
    # the mix keeps the std and gives the wanted correlation between slices
    f = np.random.default_rng(0).standard_normal((4, 200_000))
    m = _mixed(f, 0.4)
    assert m.shape == (3, 200_000) and abs(float(m.std()) - 1.0) < 0.01
    assert abs(float(np.corrcoef(m[0], m[2])[0, 1]) - 0.4) < 0.01


def test_a_context_run_starts_exactly_where_its_parent_package_is(tiny_denoiser, tmp_path):
    """init_from widens the parent's head to three slices with zeros on the neighbours: same output at step 0."""
    from CTNormalizeLib.errors import BadInputError
    from CTNormalizeLib.models import build_model
    from CTNormalizeLib.models.registry import read_package
    from CTNormalizeLib.train.denoiser import init_from_package

    cfg = _cfg(context=3, init_from="ctn-denoise-v1")
    model = build_model(cfg.arch).eval()
    init_from_package(model, "ctn-denoise-v1")
    parent = read_package(tiny_denoiser).load().eval()
    x, c = torch.randn(2, 3, 32, 32) * 0.05, torch.randn(2, parent.cond[0].in_features)
    with torch.no_grad():
        assert torch.equal(model(x, c), parent(x[:, 1:2], c))
    with pytest.raises(BadInputError, match="No installed"):
        init_from_package(model, "ctn-nope")
    with pytest.raises(BadInputError, match="shape"):
        init_from_package(build_model(_cfg(width=12).arch), "ctn-denoise-v1")


def test_a_run_from_a_package_records_its_sha256_and_the_bank_through_a_resume(tiny_denoiser, tmp_path):
    """The card says which weights the run started from and which bank it read, also after resuming."""
    from CTNormalizeLib.models.registry import read_package, sha256_file
    from CTNormalizeLib.train.denoiser import train_denoiser

    parent_sha = read_package(tiny_denoiser).sha256
    bank = _fake_bank(tmp_path / "ctx_bank.npz")
    cfg = _cfg(context=3, init_from="ctn-denoise-v1", name="ctn-denoise-test")
    train_denoiser(cfg, bank, tmp_path / "ctx_run", stop_after=1)
    pkg = train_denoiser(cfg, bank, tmp_path / "ctx_run")  # resumed: the parent is not read again
    recipe = read_package(pkg).card["recipe"]
    assert recipe["steps_done"] == cfg.steps and recipe["starts_from"] == "ctn-denoise-v1"
    assert recipe["starts_from_sha256"] == parent_sha
    assert recipe["bank"] == {"file": "ctx_bank.npz", "bytes": bank.stat().st_size, "sha256": sha256_file(bank)}
    fresh = read_package(train_denoiser(_cfg(), bank, tmp_path / "fresh_run")).card["recipe"]
    assert fresh["starts_from"] is None and fresh["starts_from_sha256"] is None


def test_a_context_package_gets_its_neighbours_across_chunks(tmp_path, monkeypatch):
    """The chain hands a 3-slice denoiser each chunk with one extra slice on each side: chunking changes nothing."""
    from CTNormalizeLib.classical.denoise import StackDenoiser, denoise_volume
    from CTNormalizeLib.inference.net_denoise import stack_denoiser
    from CTNormalizeLib.models import registry
    from CTNormalizeLib.signature.kernel_class import as_transfer
    from CTNormalizeLib.train.denoiser import train_denoiser

    pkg = train_denoiser(_cfg(context=3, name="ctn-denoise-v2", steps=2), _fake_bank(tmp_path / "bank.npz"),
                         tmp_path / "run", package_dir=tmp_path / "models" / "ctn-denoise-v2")
    monkeypatch.setattr(registry, "model_dirs", lambda: [tmp_path / "models"])
    card = json.loads((pkg / "card.json").read_text())
    assert card["io"]["context"] == 3 and card["io"]["slice_by_slice"] is False and card["name"] == "ctn-denoise-v2"
    den = stack_denoiser(registry.read_package(pkg), as_transfer("standard"), 0.8)
    assert den.halo == 1
    hu = chest((11, 96, 96)) + np.random.default_rng(0).normal(0, 30, (11, 96, 96)).astype(np.float32)
    whole = den.fn(hu, 30.0)
    for chunk in (1, 4):
        out, _ = denoise_volume(hu, (2.0, 0.8, 0.8), target_std=3.0, noise_std=30.0,
                                method=StackDenoiser(den.name, den.fn, chunk=chunk, halo=1), strength=30.0)
        np.testing.assert_allclose(out, whole, atol=1e-4)
    # without the halo a chunk's edge slices lose a neighbour and come out differently
    cut, _ = denoise_volume(hu, (2.0, 0.8, 0.8), target_std=3.0, noise_std=30.0,
                            method=StackDenoiser(den.name, den.fn, chunk=4, halo=0), strength=30.0)
    assert not np.allclose(cut[3], whole[3], atol=1e-4)
    assert den.fn(hu[:1], 30.0).shape == (1, 96, 96)  # one slice: its own neighbour


def test_nlm_blend_weight_is_read_per_kind_of_pair():
    from CTNormalizeLib.inference.net_denoise import nlm_blend

    assert nlm_blend({}, "noise_only") == 0.0
    assert nlm_blend({"chain": {"nlm_blend": {"noise_only": 0.4}}}, "noise_only") == 0.4
    assert nlm_blend({"chain": {"nlm_blend": {"noise_only": 0.4}}}, "kernel_change") == 0.0
    assert nlm_blend({"chain": {"nlm_blend": 0.3}}, "kernel_change") == 0.3


def test_flip_averaging_is_the_mean_of_the_flipped_views_and_read_per_kind(tiny_denoiser):
    """chain.flips n: the network's output is the mean over n flips of its input, each flipped back; 1 is the
    network alone, bit for bit; the chain takes the count for its kind of pair and says so in the report."""
    import torch

    from CTNormalizeLib.errors import BadInputError
    from CTNormalizeLib.inference.net_denoise import network_flips, nlm_blend, run_chain, stack_denoiser
    from CTNormalizeLib.models.registry import read_package
    from CTNormalizeLib.plan import make_plan
    from CTNormalizeLib.volume import Volume

    pkg = read_package(tiny_denoiser)
    with torch.no_grad():  # a trained-for-3-steps tail is near zero: make the network visibly not flip-equivariant
        module = pkg.load()
        module.tail.weight.normal_(0, 0.05)
        module.tail.weight[..., 0, 0] += 0.2
    # no body (nothing above -500 HU): the whole 64 x 64 stack goes through the network, so flipped inputs
    # meet the same down-sampling grid and the views compare exactly
    hu = (-1000 + np.random.default_rng(2).normal(0, 40, (3, 64, 64))).astype(np.float32)
    tf = lambda f: np.ones_like(np.asarray(f, float))  # noqa: E731
    one, two, four = (stack_denoiser(pkg, tf, 0.8, flips=n).fn(hu, 30.0) for n in (1, 2, 4))
    lr = stack_denoiser(pkg, tf, 0.8).fn(np.ascontiguousarray(hu[:, :, ::-1]), 30.0)[:, :, ::-1]
    ud = stack_denoiser(pkg, tf, 0.8).fn(np.ascontiguousarray(hu[:, ::-1]), 30.0)[:, ::-1]
    both = stack_denoiser(pkg, tf, 0.8).fn(np.ascontiguousarray(hu[:, ::-1, ::-1]), 30.0)[:, ::-1, ::-1]
    assert not np.allclose(one, lr, atol=0.5)
    np.testing.assert_allclose(two, (one + lr) / 2, atol=1e-3)
    np.testing.assert_allclose(four, (one + lr + ud + both) / 4, atol=1e-3)
    with pytest.raises(BadInputError, match="flips"):
        stack_denoiser(pkg, tf, 0.8, flips=3)

    # the same by hand, on a stack whose size is not a multiple of the network's down-sampling (padded first,
    # then flipped: the padding moves to the other side and the views still share one grid)
    import torch.nn.functional as F

    from CTNormalizeLib.models.conditioning import denoise_features

    odd = (-1000 + np.random.default_rng(4).normal(0, 40, (2, 62, 66))).astype(np.float32)
    lo, hi = pkg.card["io"]["hu_window"]
    div, off = (float(pkg.card["io"]["scale"][k]) for k in ("divisor", "offset"))
    mult = int(module.multiple)
    clipped = np.clip(odd, lo, hi)
    x = torch.from_numpy((clipped - off) / div)[:, None]
    x = F.pad(x, (0, (-66) % mult, 0, (-62) % mult), mode="replicate")
    cond = torch.tensor([denoise_features(30.0, tf, 0.8)], dtype=torch.float32).expand(2, -1)
    with torch.inference_mode():
        views = [module(x, cond), torch.flip(module(torch.flip(x, (3,)), cond), (3,))]
    ref = lambda y: y[:, 0, :62, :66].numpy() * div + off + (odd - clipped)  # noqa: E731
    np.testing.assert_allclose(stack_denoiser(pkg, tf, 0.8).fn(odd, 30.0), ref(views[0]), atol=2e-3)
    np.testing.assert_allclose(stack_denoiser(pkg, tf, 0.8, flips=2).fn(odd, 30.0), ref((views[0] + views[1]) / 2),
                               atol=2e-3)
    for bad in ([2], "2", True, 2.0):
        with pytest.raises(BadInputError, match="flips"):
            stack_denoiser(pkg, tf, 0.8, flips=bad)

    assert network_flips({}, "noise_only") == 1
    assert network_flips({"chain": {"flips": {"noise_only": 2}}}, "noise_only") == 2
    assert network_flips({"chain": {"flips": {"noise_only": 2}}}, "kernel_change") == 1
    assert network_flips({"chain": {"flips": 4}}, "kernel_change") == 4
    for bad in (3, 0, "2", True, 2.5, None, [2], {}):
        with pytest.raises(BadInputError, match="chain.flips"):
            network_flips({"name": "x", "chain": {"flips": {"noise_only": bad}}}, "noise_only")
    # a misspelt kind would otherwise fall back to the default setting without a word
    for field, read in (("flips", network_flips), ("nlm_blend", nlm_blend)):
        with pytest.raises(BadInputError, match=f"chain.{field} has 'noise-only'"):
            read({"name": "x", "chain": {field: {"noise-only": 2, "kernel_change": 1}}}, "kernel_change")

    vol = Volume(chest((6, 64, 64)) + np.random.default_rng(1).normal(0, 40, (6, 64, 64)).astype(np.float32),
                 (2.0, 0.8, 0.8))
    plan = make_plan(vol, "kernel=standard,dose=0.1,thickness=2", "kernel=standard,dose=1,thickness=2",
                     method="classical", device="cpu", texture="clean")
    import dataclasses

    plain = run_chain(pkg, vol, plan)
    flipped = run_chain(dataclasses.replace(pkg, card=dict(pkg.card, chain={"flips": {"noise_only": 2}})), vol, plan)
    assert not np.allclose(plain.volume.hu, flipped.volume.hu, atol=0.5)
    step = next(s for s in flipped.steps if s.get("step") == "denoise" or s.get("method") == "denoise")
    assert "2 flips averaged" in step["parameters"]["method"] and step["parameters"]["flips"] == 2
    tplan = make_plan(vol, "kernel=standard,dose=0.1,thickness=2", "kernel=standard,dose=1,thickness=2",
                      method="classical", device="cpu", texture="target")
    card = dict(pkg.card, chain={"flips": {"noise_only": 2}})
    step = next(s for s in run_chain(dataclasses.replace(pkg, card=card), vol, tplan).steps
                if s.get("step") == "denoise" or s.get("method") == "denoise")
    assert "flips" not in step["parameters"]["method"]  # chosen on the clean texture only
    assert step["parameters"]["flips"] == 1
    bad = dict(pkg.card, chain={"flips": {"noise_only": 3}})
    with pytest.raises(BadInputError, match="chain.flips"):  # a bad card is refused in either texture
        run_chain(dataclasses.replace(pkg, card=bad), vol, tplan)


def test_the_clean_texture_averages_the_network_with_nlm_as_the_card_says(tiny_denoiser):
    """nlm_blend w: the noise step gives (1 - w) network + w NLM inside the network's region, exactly; the air
    outside is the network's (kept); the target texture ignores it."""
    from CTNormalizeLib.classical import chain
    from CTNormalizeLib.inference.net_denoise import stack_denoiser
    from CTNormalizeLib.models.registry import read_package
    from CTNormalizeLib.plan import make_plan
    from CTNormalizeLib.volume import Volume

    vol = Volume(chest((6, 64, 64)) + np.random.default_rng(1).normal(0, 40, (6, 64, 64)).astype(np.float32),
                 (2.0, 0.8, 0.8))
    plan = make_plan(vol, "kernel=standard,dose=0.1,thickness=2", "kernel=standard,dose=1,thickness=2",
                     method="classical", device="cpu", texture="clean")
    den = stack_denoiser(read_package(tiny_denoiser), plan.source_signature.transfer, 0.8)
    net = chain.run(vol, plan, options={"denoise_method": den}).volume.hu
    nlm = chain.run(vol, plan).volume.hu
    res = chain.run(vol, plan, options={"denoise_method": den, "nlm_blend": 0.3})
    m = den.region(vol.hu)  # the network's region: the body, feathered; 0 in the air around it
    outside = m == 0
    assert m.max() == pytest.approx(1.0) and outside.any()
    np.testing.assert_allclose(res.volume.hu, net + 0.3 * m * (nlm - net), atol=1e-3)
    np.testing.assert_array_equal(res.volume.hu[outside], net[outside])  # air the network keeps stays kept
    assert not np.allclose(nlm[outside], net[outside])  # (where NLM alone would have changed it)
    step = next(s for s in res.steps if s.get("step") == "denoise" or s.get("method") == "denoise")
    params = step["parameters"]
    assert params["nlm_blend"]["nlm_weight"] == 0.3
    # named for a reader: no bare ratio/blend/weight beside the NLM blend's own figures
    assert params["output_weight"] == 1.0 and params["noise_left_fraction"] == pytest.approx(0.15)
    assert not {"ratio", "blend"} & set(params) and "weight" not in params["nlm_blend"]
    assert {"nlm_residual", "nlm_output_weight", "nlm_strength"} <= set(params["nlm_blend"])
    tplan = make_plan(vol, "kernel=standard,dose=0.1,thickness=2", "kernel=standard,dose=1,thickness=2",
                      method="classical", device="cpu", texture="target")
    a = chain.run(vol, tplan, options={"denoise_method": den}).volume.hu
    b = chain.run(vol, tplan, options={"denoise_method": den, "nlm_blend": 0.3}).volume.hu
    np.testing.assert_array_equal(a, b)


def test_the_blend_runs_nlm_only_around_the_body_and_gives_what_whole_slices_give(tiny_denoiser):
    """A small body in a wide field of view: NLM runs on the body's box, and inside the region the blend
    equals the one with NLM on whole slices."""
    from CTNormalizeLib.classical import chain
    from CTNormalizeLib.inference.net_denoise import stack_denoiser
    from CTNormalizeLib.models.registry import read_package
    from CTNormalizeLib.plan import make_plan
    from CTNormalizeLib.volume import Volume

    body = chest((6, 64, 64))
    hu = np.full((6, 160, 160), -1000.0, np.float32)
    hu[:, 40:104, 60:124] = body
    hu += np.random.default_rng(2).normal(0, 40, hu.shape).astype(np.float32)
    vol = Volume(hu, (2.0, 0.8, 0.8))
    plan = make_plan(vol, "kernel=standard,dose=0.1,thickness=2", "kernel=standard,dose=1,thickness=2",
                     method="classical", device="cpu", texture="clean")
    den = stack_denoiser(read_package(tiny_denoiser), plan.source_signature.transfer, 0.8)
    net = chain.run(vol, plan, options={"denoise_method": den}).volume.hu
    nlm = chain.run(vol, plan).volume.hu  # NLM on whole slices
    res = chain.run(vol, plan, options={"denoise_method": den, "nlm_blend": 0.4})
    step = next(s for s in res.steps if s.get("step") == "denoise" or s.get("method") == "denoise")
    y0, y1, x0, x1 = step["parameters"]["nlm_blend"]["nlm_box"]
    assert (y1 - y0) * (x1 - x0) < 0.6 * 160 * 160  # the air around the body was not denoised
    m = den.region(vol.hu)
    np.testing.assert_allclose(res.volume.hu, net + 0.4 * m * (nlm - net), atol=0.01)
    # the report says where the time went: every step's wall seconds, and the blend's NLM part of the denoise step
    assert all(isinstance(s["seconds"], float) and s["seconds"] >= 0 for s in res.steps)
    assert 0 < step["parameters"]["nlm_blend"]["nlm_seconds"] <= step["seconds"]


def _noisy_chest_dose_plan(package_dir, seed):
    """A small noisy chest, its clean-texture dose-only plan and the package at ``package_dir``."""
    from CTNormalizeLib.models.registry import read_package
    from CTNormalizeLib.plan import make_plan
    from CTNormalizeLib.volume import Volume

    vol = Volume(chest((6, 64, 64)) + np.random.default_rng(seed).normal(0, 40, (6, 64, 64)).astype(np.float32),
                 (2.0, 0.8, 0.8))
    plan = make_plan(vol, "kernel=standard,dose=0.1,thickness=2", "kernel=standard,dose=1,thickness=2",
                     method="classical", device="cpu", texture="clean")
    return vol, plan, read_package(package_dir)


def test_the_cards_nlm_residual_sets_how_much_noise_the_blends_nlm_leaves(tiny_denoiser):
    import dataclasses

    from CTNormalizeLib.inference.net_denoise import run_chain

    vol, plan, pkg = _noisy_chest_dose_plan(tiny_denoiser, 3)
    runs = {}
    for r in (0.15, 0.5):
        card = dict(pkg.card, chain={"nlm_blend": {"noise_only": 1.0}, "nlm_residual": {"noise_only": r}})
        res = run_chain(dataclasses.replace(pkg, card=card), vol, plan)
        step = next(s for s in res.steps if s.get("step") == "denoise" or s.get("method") == "denoise")
        assert step["parameters"]["nlm_blend"]["nlm_residual"] == r
        runs[r] = res.volume.hu
    inner = (slice(None), slice(16, 48), slice(16, 48))
    clean = chest((6, 64, 64))
    # a lighter NLM leaves more of the noise: the output is further from the noise-free image
    assert np.std((runs[0.5] - clean)[inner]) > np.std((runs[0.15] - clean)[inner]) + 1.0


def test_the_chain_uses_and_records_the_residual_chosen_for_the_scan(tiny_denoiser):
    """chain.nlm_residual_choice risk: the blend's NLM leaves the residual picked for this scan (classical.blend_risk),
    and the step records the choice and every candidate's estimated error; card: the card's residual."""
    import dataclasses

    from CTNormalizeLib.inference.net_denoise import run_chain

    vol, plan, pkg = _noisy_chest_dose_plan(tiny_denoiser, 5)
    # this small chest has no fat or muscle region to measure its noise in: the card's residual stays, and the
    # report says why in the same shape as a choice (the residual used, the card's, and the reason)
    risk = {"nlm_blend": 0.5, "nlm_residual": 0.45, "nlm_residual_choice": "risk"}
    kept = next(s for s in run_chain(dataclasses.replace(pkg, card=dict(pkg.card, chain=risk)), vol, plan).steps
                if s["method"] == "denoise")
    why = kept["parameters"]["nlm_blend"]["residual_choice"]
    assert why["residual"] == why["card_residual"] == kept["parameters"]["nlm_blend"]["nlm_residual"] == 0.45
    assert "fat or muscle" in why["kept_card_because"] and "fat or muscle" in kept["note"]
    # the chooser is asked only where such a region was found (test_blend_risk), so the plan says its
    # (uniform) noise was measured in fat or muscle
    plan = dataclasses.replace(plan, source_signature=dataclasses.replace(plan.source_signature, noise_region="tissue"))
    steps, outs = {}, {}
    for way in ("card", "risk"):
        chain = {"nlm_blend": 0.5, "nlm_residual": 0.45, "nlm_residual_choice": way}
        res = run_chain(dataclasses.replace(pkg, card=dict(pkg.card, chain=chain)), vol, plan)
        steps[way] = next(s for s in res.steps if s["method"] == "denoise")
        outs[way] = res.volume.hu
    assert "residual_choice" not in steps["card"]["parameters"]["nlm_blend"]
    assert steps["card"]["parameters"]["nlm_blend"]["nlm_residual"] == 0.45
    blend = steps["risk"]["parameters"]["nlm_blend"]
    choice = blend["residual_choice"]
    assert blend["nlm_residual"] == choice["residual"] and choice["residual"] in choice["candidates"]
    assert choice["nlm_weight"] == 0.5 and min(choice["risk_hu2"].values()) == choice["risk_hu2"][f"{choice['residual']:g}"]
    assert choice["card_residual"] == 0.45 and "the card's 45% otherwise" in steps["risk"]["note"]
    probe = choice["probe_slices"]
    assert probe["count"] == probe["last"] - probe["first"] + 1 == min(8, vol.hu.shape[0])
    assert set(choice["nlm_calibration"]) == {"strength", "nlm_output_weight"}
    assert "Stein's unbiased risk estimate" in steps["risk"]["note"]
    # the output is the card's blend at the picked residual
    chain = {"nlm_blend": 0.5, "nlm_residual": choice["residual"], "nlm_residual_choice": "card"}
    same = run_chain(dataclasses.replace(pkg, card=dict(pkg.card, chain=chain)), vol, plan).volume.hu
    np.testing.assert_array_equal(outs["risk"], same)


def test_a_blend_without_a_region_is_everywhere_and_an_empty_region_blends_nothing():
    from types import SimpleNamespace

    from CTNormalizeLib.classical.denoise import StackDenoiser, _blend_with_nlm

    rng = np.random.default_rng(4)
    hu = (chest((4, 48, 48)) + rng.normal(0, 30, (4, 48, 48))).astype(np.float32)
    state = SimpleNamespace(hu=hu, spacing=(2.0, 0.8, 0.8), transfer="standard")
    net = np.zeros_like(hu)
    whole, info = _blend_with_nlm(state, net.copy(), StackDenoiser("z", lambda st, s: st), 0.25, 30.0, 0.15, None, None)
    assert info["nlm_weight"] == 0.25 and "nlm_box" not in info
    nlm = whole / 0.25  # (1 - w) * 0 + w * NLM
    assert np.abs(nlm - hu).mean() > 1.0 and np.abs(nlm - hu).mean() < 30.0  # NLM ran on every voxel
    seen = []
    none = StackDenoiser("z", lambda st, s: st, region=lambda st: np.zeros(st.shape[1:], np.float32))
    out, info = _blend_with_nlm(state, net.copy(), none, 0.25, 30.0, 0.15, None, lambda st, f: seen.append(f))
    np.testing.assert_array_equal(out, net)
    assert info["nlm_weight"] == 0.0 and "empty" in info["note"] and seen[-1] == 1.0


def test_pair_kind_lives_with_the_signatures():
    from types import SimpleNamespace

    from CTNormalizeLib.signature import class_transfer, pair_kind

    sharp, smooth = (SimpleNamespace(transfer=class_transfer(k)) for k in ("sharp", "smooth"))
    assert pair_kind(sharp, smooth) == "kernel_change"
    assert pair_kind(smooth, SimpleNamespace(transfer=class_transfer("smooth"))) == "noise_only"
    assert pair_kind(None, smooth) == "kernel_change"


def test_choose_residual_by_risk_records_its_decision_and_keeps_the_blend(tiny_denoiser, monkeypatch, capsys):
    """The script runs the package both ways per case, takes 'risk' for a kind only where its pooled gap
    closed is higher, writes only with no --dry-run (the blend settings untouched), and refuses bad input."""
    import importlib

    from CTNormalizeLib.volume import Volume

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    blend = importlib.import_module("choose_nlm_blend")
    mod = importlib.import_module("choose_residual_by_risk")
    rng = np.random.default_rng(0)
    clean = chest((4, 64, 64))

    def noisy(sd):
        return Volume(clean + rng.normal(0, sd, clean.shape).astype(np.float32), (2.0, 0.8, 0.8))

    cases = [("noise_only", *blend.PAIRS["noise_only"][0], noisy(40), noisy(12), noisy(12))]
    monkeypatch.setattr(blend, "validation_cases", lambda which="randomized", seeds=None, targets=None: cases)
    # this small chest has no fat or muscle to measure its noise in (the chooser would not be asked)
    monkeypatch.setattr("CTNormalizeLib.signature.signature.Signature.noise_from_tissue", property(lambda self: True))
    card_path = tiny_denoiser / "card.json"
    card = json.loads(card_path.read_text())
    card["chain"] = {"nlm_blend": 0.5, "nlm_residual": 0.3}
    card_path.write_text(json.dumps(card))
    before = card_path.read_bytes()
    assert mod.main([str(tiny_denoiser), "--dry-run"]) == 0
    assert card_path.read_bytes() == before
    assert mod.main([str(tiny_denoiser)]) == 0
    chain = json.loads(card_path.read_text())["chain"]
    record = chain["residual_choice_validation"]["kinds"]["noise_only"]
    figures = record["figures"]
    assert chain["nlm_residual_choice"]["noise_only"] in ("risk", "card")
    if figures["risk"] != figures["card"]:  # (the figures are rounded to 4 decimals; the decision is not)
        assert chain["nlm_residual_choice"] == {"noise_only": "risk" if figures["risk"] > figures["card"] else "card"}
    assert chain["residual_choice_validation"]["blend"] == {"nlm_blend": 0.5, "nlm_residual": 0.3, "flips": None}
    assert figures["cases"] == 1 and chain["nlm_blend"] == 0.5 and chain["nlm_residual"] == 0.3
    assert record["seeds"] == list(mod.FRESH_SEEDS) and record["targets"] == list(blend.RANDOM_TARGETS)
    assert all(r["picked_residual"] in (0.15, 0.3) for r in record["cases"])
    assert mod.main([str(tiny_denoiser), "--seeds", "4x"]) == 2
    assert mod.main([str(tiny_denoiser), "--kinds", "dose_only"]) == 2
    assert mod.main([str(ROOT / "Resources" / "Models" / "ctn-conditioned-v3")]) == 2
    assert "not a denoiser package" in capsys.readouterr().err


def test_choose_residual_by_risk_keeps_another_kinds_decision_only_with_the_same_blend(monkeypatch):
    import importlib

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    mod = importlib.import_module("choose_residual_by_risk")
    blend = {"nlm_blend": 0.5, "nlm_residual": 0.3, "flips": None}
    earlier = mod.merged_chain({"nlm_blend": 0.5}, {"noise_only": {"choice": "risk", "seeds": [44], "targets": ["a"],
                                                                   "figures": {}, "cases": []}}, blend)
    assert earlier["nlm_residual_choice"] == {"noise_only": "risk"} and earlier["nlm_blend"] == 0.5
    later = {"kernel_change": {"choice": "card", "seeds": [48], "targets": ["a", "b"], "figures": {}, "cases": []}}
    both = mod.merged_chain(earlier, later, blend)
    assert both["nlm_residual_choice"] == {"noise_only": "risk", "kernel_change": "card"}
    assert both["residual_choice_validation"]["kinds"]["noise_only"]["seeds"] == [44]
    assert both["residual_choice_validation"]["kinds"]["kernel_change"]["targets"] == ["a", "b"]
    moved = mod.merged_chain(earlier, later, dict(blend, nlm_blend=0.6))  # measured with another blend: dropped
    assert moved["nlm_residual_choice"] == {"kernel_change": "card"}
    assert set(moved["residual_choice_validation"]["kinds"]) == {"kernel_change"}
    # deciding a kind again keeps what it replaces
    again = mod.merged_chain(both, {"kernel_change": dict(later["kernel_change"], choice="risk", seeds=[52])}, blend)
    record = again["residual_choice_validation"]["kinds"]["kernel_change"]
    assert again["nlm_residual_choice"]["kernel_change"] == "risk" and record["seeds"] == [52]
    assert record["superseded"] == [{"seeds": [48], "targets": ["a", "b"], "figures": {}, "cases": [], "choice": "card"}]
    # the first record's flat form (one set of seeds, figures and cases per kind), and one choice for every kind
    flat = {"nlm_residual_choice": "risk", "residual_choice_validation": {
        "blend": blend, "seeds": [44], "figures": {"noise_only": {"risk": 0.7}, "kernel_change": {"risk": 0.8}},
        "cases": [{"kind": "noise_only", "l1_card": 1.0}, {"kind": "kernel_change", "l1_card": 2.0}]}}
    upgraded = mod.merged_chain(flat, later, blend)
    kinds = upgraded["residual_choice_validation"]["kinds"]
    assert upgraded["nlm_residual_choice"] == {"noise_only": "risk", "kernel_change": "card"}
    assert kinds["noise_only"]["seeds"] == [44] and kinds["noise_only"]["cases"] == [{"kind": "noise_only", "l1_card": 1.0}]
    assert kinds["kernel_change"]["superseded"][0]["choice"] == "risk"


def test_choose_residual_by_risk_hands_the_target_set_to_the_validation_recipe(tiny_denoiser, monkeypatch):
    import importlib

    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    blend = importlib.import_module("choose_nlm_blend")
    mod = importlib.import_module("choose_residual_by_risk")
    asked = []
    monkeypatch.setattr(blend, "validation_cases", lambda which="randomized", seeds=None, targets=None:
                        asked.append((seeds, targets)) or [])
    assert mod.main([str(tiny_denoiser), "--dry-run", "--targets", "presets", "--seeds", "48,49"]) == 0
    assert mod.main([str(tiny_denoiser), "--dry-run"]) == 0
    assert asked == [((48, 49), blend.PRESET_KERNEL_TARGETS), (mod.FRESH_SEEDS, blend.RANDOM_TARGETS)]
    assert "kernel=sharp,dose=1,thickness=2" in blend.PRESET_KERNEL_TARGETS
    # the cached scans are keyed by their targets; the default set keeps its key
    assert blend._cache_path("randomized", (48,), blend.PRESET_KERNEL_TARGETS) != blend._cache_path("randomized", (48,))
    assert blend._cache_path("randomized", (48,), blend.RANDOM_TARGETS) == blend._cache_path("randomized", (48,))


def test_choose_nlm_blend_records_the_validated_weight_and_only_then(tiny_denoiser, tmp_path, monkeypatch):
    from CTNormalizeLib.volume import Volume

    mod = _choose_script()
    rng = np.random.default_rng(0)
    clean = chest((4, 64, 64))

    def noisy(sd):
        return Volume(clean + rng.normal(0, sd, clean.shape).astype(np.float32), (2.0, 0.8, 0.8))

    cases = [("noise_only", *mod.PAIRS["noise_only"][0], noisy(40), noisy(12), noisy(12)),
             ("noise_only", *mod.PAIRS["noise_only"][0], noisy(15), noisy(12), noisy(12)),  # a small gap
             ("kernel_change", *mod.PAIRS["kernel_change"][0], noisy(40), noisy(5), noisy(5))]
    asked = []
    monkeypatch.setattr(mod, "validation_cases", lambda which="randomized", seeds=None, targets=None:
                        asked.append((seeds, targets)) or cases)
    monkeypatch.setattr(mod, "WEIGHTS", (0.0, 0.5))
    monkeypatch.setattr(mod, "RESIDUALS", (0.15, 0.4))
    card_path = tiny_denoiser / "card.json"
    card = json.loads(card_path.read_text())
    # a per-scan residual decision measured with another blend (here: none) does not survive a new blend
    card["chain"] = {"nlm_residual_choice": {"noise_only": "risk"}, "residual_choice_validation": {}}
    card_path.write_text(json.dumps(card))
    before = card_path.read_bytes()
    assert mod.main([str(tiny_denoiser), "--dry-run"]) == 0
    assert card_path.read_bytes() == before
    assert mod.main([str(tiny_denoiser), "--seeds", "52,53", "--targets", "presets"]) == 0
    assert asked == [(mod.SEEDS, mod.RANDOM_TARGETS), ((52, 53), mod.PRESET_KERNEL_TARGETS)]
    card = json.loads(card_path.read_text())
    assert "seeds 52, 53" in card["chain"]["chosen_on"] and "kernel=sharp" in card["chain"]["chosen_on"]
    assert "nlm_residual_choice" not in card["chain"] and "residual_choice_validation" not in card["chain"]
    assert set(card["chain"]["nlm_blend"]) == {"noise_only", "kernel_change"}
    assert all(w in (0.0, 0.5) for w in card["chain"]["nlm_blend"].values())
    assert all(r in (0.15, 0.4) for r in card["chain"]["nlm_residual"].values())
    table = card["chain"]["validation"]
    assert set(table["noise_only"]) == {"residual 0.15", "residual 0.4"}
    # the residual reaches the chain (rows differ once NLM has weight) and the choice is the table's best
    assert table["noise_only"]["residual 0.15"]["0.5"] != table["noise_only"]["residual 0.4"]["0.5"]
    for kind, rows in table.items():
        best = max(((float(r.split()[1]), float(w)) for r in rows for w in rows[r]),
                   key=lambda rw: (round(rows[f"residual {rw[0]:g}"][f"{rw[1]:g}"], 4), -rw[1], -abs(rw[0] - 0.15)))
        assert (card["chain"]["nlm_residual"][kind], card["chain"]["nlm_blend"][kind]) == best
    # flips: the blend's best at each count, and the count the rule takes from them
    fl = card["chain"]["validation_flips"]
    for kind, per in fl.items():
        assert set(per) == {"1", "2", "4"}
        assert card["chain"]["flips"][kind] == mod.choose_flips({int(f): v["best"] for f, v in per.items()})
        taken = per[str(card["chain"]["flips"][kind])]
        assert (taken["residual"], taken["weight"]) == (card["chain"]["nlm_residual"][kind],
                                                         card["chain"]["nlm_blend"][kind])
    assert "held-out" in card["chain"]["chosen_on"] and card["chain"]["check_max_abs_diff_hu"] <= 0.05
    assert card["chain"]["validation_set"] == "randomized" and "domain-randomized" in card["chain"]["chosen_on"]
    assert "pooled" in card["chain"]["metric"] and len(card["chain"]["gap_hu"]["noise_only"]) == 2
    ratios = card["chain"]["validation_mean_of_ratios"]
    assert set(ratios) == {"noise_only", "kernel_change"}
    # two noise-only cases with different gaps: the table chosen from is the pooled one, not the mean of ratios
    assert table["noise_only"] != ratios["noise_only"] and table["kernel_change"] == ratios["kernel_change"]
    other = tmp_path / "notden"
    other.mkdir()
    (other / "card.json").write_text(json.dumps({**card, "role": "normalizer"}))
    (other / "model.safetensors").write_bytes((tiny_denoiser / "model.safetensors").read_bytes())
    assert mod.main([str(other)]) == 2


def test_flips_are_taken_only_where_each_doubling_pays():
    mod = _choose_script()
    g = mod.FLIP_GAIN
    assert mod.choose_flips({1: 0.70, 2: 0.70 + g / 2, 4: 0.70 + g}) == 1  # 4 flips are two doublings: 2 x gain
    assert mod.choose_flips({1: 0.70, 2: 0.70 + g / 2, 4: 0.70 + 2 * g}) == 4
    assert mod.choose_flips({1: 0.70, 2: 0.70 + g, 4: 0.70 + 1.5 * g}) == 2
    assert mod.choose_flips({1: 0.70, 2: 0.70 + g, 4: 0.70 + 2 * g}) == 4
    assert mod.choose_flips({1: 0.70, 2: 0.69, 4: 0.68}) == 1


def test_a_rerun_keeps_the_cards_blend_unless_the_best_is_ahead_by_more_than_noise():
    mod = _choose_script()
    rng = np.random.default_rng(3)
    gaps = list(rng.uniform(1, 20, 14))
    inc = [0.7 * g for g in gaps]
    e = rng.normal(0, 0.3, 14)
    noisy = list(np.asarray(inc) + e - e.mean() + 0.01)  # a hair ahead pooled, different case by case
    better = [0.75 * g for g in gaps]  # ahead on every case
    closed = {"inc": inc, "noisy": noisy, "better": better}
    assert mod.difference_se(inc, inc, gaps) == 0.0
    assert mod.difference_se(noisy, inc, gaps) > 0
    assert mod.pooled_gap(noisy, gaps) > mod.pooled_gap(inc, gaps)
    assert mod.keep_or_best("noisy", "inc", closed, gaps) == "inc"
    assert mod.keep_or_best("better", "inc", closed, gaps) == "better"
    assert mod.keep_or_best("noisy", None, closed, gaps) == "noisy"  # nothing to keep
    assert mod.keep_or_best("noisy", "gone", closed, gaps) == "noisy"  # the card's blend is not on this grid
    assert mod._incumbent({"chain": {"nlm_blend": {"noise_only": 0.3}, "nlm_residual": {"noise_only": 0.15}}},
                          "noise_only") == (0.15, 0.3)
    assert mod._incumbent({"chain": {"nlm_blend": 0.3, "nlm_residual": 0.15}}, "kernel_change") == (0.15, 0.3)
    assert mod._incumbent({}, "noise_only") is None
    # as the chain runs it: a kind without a weight blends nothing, a missing residual is the clean chain's
    assert mod._incumbent({"chain": {"nlm_blend": {"noise_only": 0.4}}}, "kernel_change") == (0.15, 0.0)


def test_the_blend_is_chosen_by_the_hu_each_case_has_to_close():
    """A case whose source is hardly noisier than its target cannot swing the choice (a mean of ratios let it)."""
    mod = _choose_script()
    gaps = [10.0, 0.05]  # HU to close: a real dose gap, and next to none
    a, b = [9.0, -0.05], [8.5, 0.05]  # a closes more of the real gap; b 'closes' all of the tiny one
    assert mod.pooled_gap(a, gaps) > mod.pooled_gap(b, gaps)
    assert np.mean(np.divide(a, gaps)) < np.mean(np.divide(b, gaps))
    assert mod.pooled_gap(a, gaps) == pytest.approx(8.95 / 10.05)


def _choose_script():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "choose_nlm_blend", Path(__file__).resolve().parents[2] / "scripts" / "choose_nlm_blend.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_randomized_validation_set_is_untagged_unknown_scanners_and_cached(tmp_path, monkeypatch):
    """Sources from random scanners carry no kernel name; noise-only targets are the same scanner at a higher dose."""
    from CTNormalizeLib.simulate.phantom.make import make_phantom

    mod = _choose_script()
    monkeypatch.setattr(mod, "SEEDS", (40,))
    monkeypatch.setattr(mod, "RANDOM_PER_KIND", 1)
    monkeypatch.setattr(mod, "_truth", lambda seed: make_phantom(seed, shape=(4, 96, 96), spacing=(1.0, 2.0, 2.0)).volume)
    cache = tmp_path / "cases.npz"
    cases = mod.validation_cases("randomized", cache)
    assert [c[0] for c in cases] == ["kernel_change", "noise_only"]
    for kind, s, t, src, tgt, rep in cases:
        assert s == "auto" and "ConvolutionKernel" not in src.meta and src.meta["SliceThickness"] == "2"
        assert src.hu.shape == tgt.hu.shape == rep.hu.shape and not np.array_equal(tgt.hu, rep.hu)
    noise_only = cases[1]
    assert noise_only[2].startswith("dose=") and "kernel" not in noise_only[2]
    diff = lambda a, b: float(np.std(a.hu - b.hu))  # noqa: E731 - noise of the difference of two scans
    assert diff(noise_only[4], noise_only[5]) < diff(noise_only[3], noise_only[4])  # less noise at the target
    monkeypatch.setattr(mod, "_random_scans", lambda *a: (_ for _ in ()).throw(AssertionError("not cached")))
    again = mod.validation_cases("randomized", cache)
    assert all(np.array_equal(a[3].hu, b[3].hu) for a, b in zip(cases, again))


def test_a_partial_blend_of_a_stack_denoiser_uses_alpha_in_every_chunk():
    """x + alpha (d - x) with alpha < 1, for every chunk and halo (the chunk bounds once shadowed alpha)."""
    from CTNormalizeLib.classical.denoise import StackDenoiser, denoise_volume

    hu = np.full((11, 16, 16), 100.0, np.float32)
    for halo in (0, 1):
        out, info = denoise_volume(hu, (1.0, 0.7, 0.7), target_std=5.0, noise_std=30.0, strength=30.0, alpha=0.5,
                                   method=StackDenoiser("zeros", lambda st, s: np.zeros_like(st), chunk=4, halo=halo))
        np.testing.assert_allclose(out, 50.0)
        assert info["blend"] == 0.5


def test_chunks_agree_where_the_body_changes_along_z(tmp_path, monkeypatch):
    """The network's box starts on its down-sampling grid, so chunks with different bodies agree."""
    from CTNormalizeLib.classical.denoise import StackDenoiser, denoise_volume
    from CTNormalizeLib.inference.net_denoise import body_region, stack_denoiser
    from CTNormalizeLib.models import registry
    from CTNormalizeLib.signature.kernel_class import as_transfer
    from CTNormalizeLib.train.denoiser import train_denoiser

    pkg = train_denoiser(_cfg(context=3, name="ctn-denoise-v2", steps=2), _fake_bank(tmp_path / "bank.npz"),
                         tmp_path / "run", package_dir=tmp_path / "models" / "ctn-denoise-v2")
    monkeypatch.setattr(registry, "model_dirs", lambda: [tmp_path / "models"])
    den = stack_denoiser(registry.read_package(pkg), as_transfer("standard"), 0.8)
    yy, xx = np.mgrid[:128, :128]
    hu = np.full((9, 128, 128), -1000.0, np.float32)
    for z in range(9):  # an ellipse that widens slice by slice: every chunk's box differs
        hu[z][((yy - 64) / (30 + z)) ** 2 + ((xx - 64) / (25 + 2 * z)) ** 2 < 1] = 40.0
    hu += np.random.default_rng(0).normal(0, 30, hu.shape).astype(np.float32)
    (y0, _, x0, _), _ = body_region(hu[:2], multiple=4)
    assert y0 % 4 == 0 and x0 % 4 == 0
    outs = [denoise_volume(hu, (2.0, 0.8, 0.8), target_std=3.0, noise_std=30.0, strength=30.0,
                           method=StackDenoiser(den.name, den.fn, chunk=c, halo=1))[0] for c in (16, 4, 1)]
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], atol=0.05)


def test_resuming_another_recipes_run_is_refused_not_crashed(tmp_path):
    from CTNormalizeLib.errors import BadInputError
    from CTNormalizeLib.train.denoiser import train_denoiser

    bank = _fake_bank(tmp_path / "bank.npz")
    train_denoiser(_cfg(), bank, tmp_path / "run", stop_after=1)
    with pytest.raises(BadInputError, match="another configuration"):
        train_denoiser(_cfg(context=3), bank, tmp_path / "run")


def test_a_run_starts_only_from_a_denoiser_with_every_weight(tiny_denoiser, tmp_path):
    from CTNormalizeLib.errors import BadInputError
    from CTNormalizeLib.models import build_model
    from CTNormalizeLib.train.denoiser import init_from_package

    with pytest.raises(BadInputError, match="lacks weights"):
        init_from_package(build_model(_cfg(blocks=2).arch), "ctn-denoise-v1")
    card = json.loads((tiny_denoiser / "card.json").read_text())
    card.pop("role")
    (tiny_denoiser / "card.json").write_text(json.dumps(card))
    with pytest.raises(BadInputError, match="not a denoiser"):
        init_from_package(build_model(_cfg().arch), "ctn-denoise-v1")


def test_a_blend_weight_outside_0_1_is_a_clear_error():
    from CTNormalizeLib.errors import BadInputError
    from CTNormalizeLib.inference.net_denoise import nlm_blend

    from CTNormalizeLib.classical.denoise import CLEAN_RESIDUAL
    from CTNormalizeLib.inference.net_denoise import nlm_residual

    for bad in (1.5, -0.1, "half", None):
        with pytest.raises(BadInputError, match="nlm_blend"):
            nlm_blend({"name": "x", "chain": {"nlm_blend": {"noise_only": bad}}}, "noise_only")
    for bad in (1.5, 1.0, 0.0, "half", None):
        with pytest.raises(BadInputError, match="nlm_residual"):
            nlm_residual({"name": "x", "chain": {"nlm_residual": {"noise_only": bad}}}, "noise_only")
    assert nlm_residual({"chain": {"nlm_residual": {"noise_only": 0.45}}}, "noise_only") == 0.45
    assert nlm_residual({"chain": {"nlm_residual": {"noise_only": 0.45}}}, "kernel_change") == CLEAN_RESIDUAL
    assert nlm_residual({}, "noise_only") == CLEAN_RESIDUAL


def test_a_malformed_bank_is_a_clear_refusal(tmp_path):
    from CTNormalizeLib.cli.main import main

    small = tmp_path / "small.npz"
    np.savez_compressed(small, target_0=np.zeros((1, 64, 64), np.float32),
                        index_json=np.frombuffer(json.dumps({"targets": 1}).encode(), np.uint8))
    bare = tmp_path / "bare.npz"
    np.savez_compressed(bare, target_0=np.zeros((2, 140, 140), np.float32))
    for bank in (small, bare):
        run = tmp_path / f"run_{bank.stem}"
        assert main(["train", "--recipe", "denoise", "-o", str(run), "--bank", str(bank), "--steps", "1"]) == 2
        assert not run.exists()  # nothing left behind


def test_a_shadowed_package_is_named_in_a_warning(tiny_denoiser, tmp_path, caplog):
    import shutil

    from CTNormalizeLib.models import registry

    other = tmp_path / "more" / "copy"
    shutil.copytree(tiny_denoiser, other)
    with caplog.at_level("WARNING"):
        names = [p.name for p in registry.list_models([tmp_path / "models", tmp_path / "more"])]
    assert names.count("ctn-denoise-v1") == 1
    assert "hidden" in caplog.text and str(other) in caplog.text


def test_qc_is_measured_for_the_chain_with_a_learned_denoiser(tiny_denoiser):
    from CTNormalizeLib.normalization import normalize
    from CTNormalizeLib.volume import Volume

    vol = Volume(chest((6, 64, 64)), (2.0, 0.8, 0.8))
    res = normalize(vol, "kernel=sharp,dose=0.25,thickness=2", "kernel=smooth,dose=1,thickness=2",
                    method="ctn-denoise-v1", device="cpu", texture="clean")
    assert res.result.qc and "qc_s" in res.timings


def test_models_listing_shows_context_blend_and_target_figures(tiny_denoiser):
    from CTNormalizeLib.cli.cmd_models import collect, format_text

    card = json.loads((tiny_denoiser / "card.json").read_text())
    card["chain"] = {"nlm_blend": {"kernel_change": 0.6, "noise_only": 0.5}}
    card["selection"] = {"figures": {"l1_gap_closed_target": {"in_distribution": 0.78, "heldout_physics_noise_only": 0.69}}}
    (tiny_denoiser / "card.json").write_text(json.dumps(card))
    info = collect()
    m = info["models"][0]
    assert m["role"] == "denoiser" and m["context"] == 1 and m["nlm_blend"]["noise_only"] == 0.5
    text = format_text(info)
    assert "sees 1 slice;" in text and "dose only 0.5" in text and "target texture: L1 gap closed in distribution 0.78" in text
    assert "flipped copies" not in text  # none asked for
    card["chain"]["flips"] = {"kernel_change": 1, "noise_only": 2}
    (tiny_denoiser / "card.json").write_text(json.dumps(card))
    info = collect()
    assert info["models"][0]["flips"] == {"kernel_change": 1, "noise_only": 2}
    assert "averaged over n flipped copies of its input" in format_text(info) and "dose only 2" in format_text(info)
    card["chain"]["flips"] = 4  # one number for every kind
    (tiny_denoiser / "card.json").write_text(json.dumps(card))
    assert "kernel change 4, dose only 4" in format_text(collect())
    card["chain"]["flips"] = {"noise_only": None}  # malformed: listed as such, the listing still works
    (tiny_denoiser / "card.json").write_text(json.dumps(card))
    assert "dose only invalid" in format_text(collect())


def test_the_train_cli_offers_exactly_the_recipes_the_engine_has():
    """The CLI lists the recipes literally (importing the training code would slow every start-up)."""
    import argparse

    from CTNormalizeLib.cli import cmd_train
    from CTNormalizeLib.train.run import DENOISE_RECIPES, RECIPES

    p = argparse.ArgumentParser()
    cmd_train.add_arguments(p)
    choices = next(a.choices for a in p._actions if a.dest == "recipe")
    assert list(choices) == [*RECIPES, *DENOISE_RECIPES]


def test_train_help_names_every_continued_recipe_from_its_row():
    """`ctnormalize train --help` describes each continued denoiser recipe from RECIPE_OVERRIDES (no hand-kept list)."""
    import argparse

    from CTNormalizeLib.cli import cmd_train
    from CTNormalizeLib.train.denoiser import RECIPE_OVERRIDES

    p = argparse.ArgumentParser()
    cmd_train.add_arguments(p)
    text = " ".join(next(a.help for a in p._actions if "--recipe" in a.option_strings).split())
    for recipe, over in RECIPE_OVERRIDES.items():
        if over.get("init_from"):
            assert f"{recipe} ({over['name']}: starts from the installed {over['init_from']}" in text
            assert f"{over['steps']} batches, seed {over.get('seed', 0)})" in text
            if over["init_from"] == "ctn-denoise-v1":
                assert f"learns to use {over['context']} slices" in text
