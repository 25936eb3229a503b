"""The per-scan choice of the blend's NLM residual by Stein's unbiased risk estimate (classical.blend_risk).

When the noise is what the engine's model says (the measured transfer's FBP texture, the
soft-tissue std in the body), the estimate must match the true error of each candidate
against the noise-free image, and so pick the residual that is truly best; the card
decides where it is used, and the chain records the choice.
"""

import functools
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage as ndi

from CTNormalizeLib.classical import blend_risk
from CTNormalizeLib.classical.denoise import StackDenoiser, calibrate_strength, denoise_volume
from CTNormalizeLib.classical.noise_insertion import shaped_noise, std_map
from CTNormalizeLib.imaging import body_mask
from reliability import chest

SPACING = (2.0, 0.8, 0.8)


def _scan(sigma, seed=11, shape=(6, 96, 96)):
    clean = chest(shape).astype(np.float32)
    noise = shaped_noise(shape, SPACING, "standard", seed=seed) * std_map(clean, SPACING, sigma, None)
    return clean, (clean + noise).astype(np.float32)


def _stand_in():
    """A stand-in for the network: a 3 x 3 median inside the body (its region), the input elsewhere."""
    def region(stack):
        return ndi.gaussian_filter(body_mask(stack).astype(np.float32), (0, 2, 2))

    def fn(stack, strength):
        return stack + region(stack) * (ndi.median_filter(stack, size=(1, 3, 3)) - stack)

    return StackDenoiser("median", fn, region=region)


def _true_errors(clean, noisy, method, weight, residuals, z0, z1, sigma, post=None):
    """The mean squared error against the noise-free image (both through ``post``), inside the body of the
    probe, of each blend."""
    L = post or (lambda x: x)
    net = method.fn(noisy, sigma)
    reg = method.region(noisy)
    body = body_mask(noisy[z0:z1])
    out = {}
    for r in residuals:
        s, a, *_ = calibrate_strength(SPACING, "standard", "nlm", sigma, sigma * r, post=post)
        nlm, _ = denoise_volume(noisy, SPACING, target_std=sigma * r, noise_std=sigma, method="nlm", strength=s, alpha=a)
        blend = net + weight * reg * (nlm - net)
        out[r] = float(np.mean(((L(blend) - L(clean))[z0:z1])[body] ** 2))
    return out


@functools.lru_cache(maxsize=None)
def _case_truth(sigma, weight):
    """The true errors of the candidates on the whole scan of a case (shared by the tests below)."""
    clean, noisy = _scan(sigma)
    return _true_errors(clean, noisy, _stand_in(), weight, blend_risk.RESIDUALS, 0, noisy.shape[0], sigma)


#: (noise std, blend weight): at 30 HU a light NLM complements the median best, at 80 HU a strong one
CASES = ((30.0, 0.5), (80.0, 0.6))


@pytest.mark.parametrize("sigma,weight", CASES)
def test_the_estimate_matches_the_true_error_and_picks_the_best_residual(sigma, weight):
    """The estimate never sees the noise-free image; it agrees with the true error of every candidate within
    10 %, and the residual it picks is (within 1 %) the truly best one."""
    clean, noisy = _scan(sigma)
    method = _stand_in()
    state = SimpleNamespace(hu=noisy, spacing=SPACING, transfer="standard", noise_hu=sigma)
    choice = blend_risk.choose_residual(state, method, weight, sigma)
    assert choice.slices == (0, noisy.shape[0]) and choice.candidates == blend_risk.RESIDUALS
    truth = _case_truth(sigma, weight)
    for r, est in choice.risks.items():
        assert est == pytest.approx(truth[r], rel=0.10), (r, est, truth)
    assert truth[choice.residual] <= 1.01 * min(truth.values()), (choice.risks, truth)
    d = choice.as_dict()
    assert d["residual"] == choice.residual and d["nlm_weight"] == weight and len(d["risk_hu2"]) == len(blend_risk.RESIDUALS)


def test_the_best_residual_differs_between_the_cases():
    """So the test above can tell a right choice from a wrong one: one fixed residual is not best for both."""
    best = []
    for sigma, weight in CASES:
        t = _case_truth(sigma, weight)
        assert sorted(t.values())[1] > 1.02 * min(t.values())  # a clear winner
        best.append(min(t, key=t.get))
    assert best[0] != best[1]


def test_the_estimate_follows_the_error_through_a_sharpening_kernel_step():
    """With the kernel conversion that follows (standard -> sharp, which amplifies what the blend leaves), the
    estimate still matches the true error after it, and picks the truly best residual."""
    from CTNormalizeLib.classical.mtf_ratio import convert_kernel, wiener_lambda

    sigma, weight = 30.0, 0.5
    clean, noisy = _scan(sigma)
    post = lambda x: convert_kernel(x, SPACING, "standard", "sharp", lam=wiener_lambda(sigma))  # noqa: E731
    method = _stand_in()
    state = SimpleNamespace(hu=noisy, spacing=SPACING, transfer="standard", noise_hu=sigma)
    choice = blend_risk.choose_residual(state, method, weight, sigma, post=post)
    truth = _true_errors(clean, noisy, method, weight, choice.candidates, *choice.slices, sigma, post=post)
    for r, est in choice.risks.items():
        assert est == pytest.approx(truth[r], rel=0.10), (r, est, truth)
    assert truth[choice.residual] <= 1.01 * min(truth.values()), (choice.risks, truth)


def test_without_a_body_or_with_non_finite_voxels_the_cards_residual_stays():
    """The chain asks the chooser and keeps the card's residual, saying why, where no estimate can be made."""
    from CTNormalizeLib.classical.denoise import _residual_for_this_scan

    rng = np.random.default_rng(3)
    air = (np.full((6, 64, 64), -1000.0) + rng.normal(0, 20, (6, 64, 64))).astype(np.float32)
    _, noisy = _scan(30.0)
    nan = noisy.copy()
    nan[3, 40, 40] = np.nan
    options = {"nlm_residual_chooser": blend_risk.choose_residual}
    plan = _plan_measured_in("tissue")
    for hu, why in ((air, "empty"), (nan, "non-finite")):
        state = SimpleNamespace(hu=hu, spacing=SPACING, transfer="standard", noise_hu=30.0)
        kept = _residual_for_this_scan(state, plan, _stand_in(), 0.5, 30.0, None, options, 0.3)
        note = kept["kept_card_because"]
        assert isinstance(note, str) and note.startswith("the card's residual kept") and why in note
        assert kept["residual"] == kept["card_residual"] == 0.3
    assert _residual_for_this_scan(state, plan, _stand_in(), 0.5, 30.0, None, {}, 0.3) is None  # no chooser: the card's


def _plan_measured_in(region):
    from CTNormalizeLib.signature.signature import Signature

    return SimpleNamespace(source_signature=Signature("measured", 0.8, 2.0, 2.0, None, noise_region=region))


def test_a_noise_level_measured_in_mixed_soft_tissue_keeps_the_cards_residual(monkeypatch):
    """The estimate scales with the assumed noise: measured without fat or muscle (mixed soft tissue, twice the
    true noise on a small benchmark phantom) the chooser is not asked, and the step says why."""
    from CTNormalizeLib.classical.denoise import _residual_for_this_scan

    _, noisy = _scan(30.0)
    state = SimpleNamespace(hu=noisy, spacing=SPACING, transfer="standard", noise_hu=30.0)
    asked = []
    options = {"nlm_residual_chooser": lambda *a: asked.append(a) or (_ for _ in ()).throw(AssertionError("asked"))}
    mixed = _plan_measured_in("soft")
    note = _residual_for_this_scan(state, mixed, _stand_in(), 0.5, 30.0, None, options, 0.3)["kept_card_because"]
    assert note.startswith("the card's residual kept") and "fat or muscle" in note and not asked
    assert _plan_measured_in("tissue").source_signature.noise_from_tissue
    for region in ("soft", "air", "roi", "lung", None):
        assert not _plan_measured_in(region).source_signature.noise_from_tissue


def test_the_probe_is_the_middle_of_the_volume():
    assert blend_risk.probe_block(300) == (146, 154)
    assert blend_risk.probe_block(5) == (0, 5)


def test_the_card_says_where_the_residual_is_chosen_per_scan():
    from CTNormalizeLib.errors import BadInputError
    from CTNormalizeLib.inference.net_denoise import residual_by_risk

    assert residual_by_risk({}, "noise_only") is False
    card = {"chain": {"nlm_residual_choice": {"noise_only": "risk", "kernel_change": "card"}}}
    assert residual_by_risk(card, "noise_only") is True
    assert residual_by_risk(card, "kernel_change") is False
    assert residual_by_risk({"chain": {"nlm_residual_choice": "risk"}}, "kernel_change") is True
    with pytest.raises(BadInputError, match="nlm_residual_choice"):
        residual_by_risk({"name": "x", "chain": {"nlm_residual_choice": {"noise_only": "sure"}}}, "noise_only")
