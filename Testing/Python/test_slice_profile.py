"""Slice-profile shapes in protocol specs (``profile=rect`` for axial scans) and what the z physics does with them."""

import math

import numpy as np
import pytest

from CTNormalizeLib.errors import BadInputError
from CTNormalizeLib.normalization import execute
from CTNormalizeLib.plan import make_plan
from CTNormalizeLib.protocols.protocol import PROFILE_FWHM, Protocol, parse_spec
from test_quantify import synthetic_chest


def test_rect_profile_is_the_gaussian_of_its_second_moment():
    p = parse_spec("kernel=smooth,thickness=3,profile=axial")
    assert p.profile == "rect" and p.thickness == 3.0 and p.z_spacing == 3.0
    # a rectangle of width T has std T/sqrt(12); a Gaussian's FWHM is 2 sqrt(2 ln 2) std
    assert p.ssp_fwhm == pytest.approx(3.0 / math.sqrt(12.0) * 2.0 * math.sqrt(2.0 * math.log(2.0)))
    assert p.spec() == "kernel=smooth,thickness=3,profile=rect"
    assert parse_spec(p.spec()) == p
    assert parse_spec("thickness=2,profile=helical").ssp_fwhm == 2.0 == parse_spec("thickness=2").ssp_fwhm
    assert Protocol(kernel="smooth").ssp_fwhm is None and PROFILE_FWHM["gaussian"] == 1.0


def test_a_new_thickness_replaces_the_profile_it_came_with():
    rect = parse_spec("kernel=smooth,thickness=3,profile=rect")
    assert rect.merged(parse_spec("thickness=2")).profile is None
    assert rect.merged(parse_spec("dose=0.5")).profile == "rect"
    with pytest.raises(BadInputError, match="needs the thickness"):
        parse_spec("kernel=smooth,profile=rect")
    with pytest.raises(BadInputError, match="Unknown slice profile"):
        parse_spec("thickness=1,profile=box")


@pytest.fixture(scope="module")
def thin_chest():
    """A noise-light chest at 0.5 mm slices with short z runs of -1000 HU in the lungs (small emphysema)."""
    vol, truth = synthetic_chest(shape=(96, 96, 96), spacing=(0.5, 3.0, 3.0), seed=1)
    hu = vol.hu.copy()
    rng = np.random.default_rng(0)
    lungs = truth["lungs"]
    idx = np.argwhere(lungs)
    for z, y, x in idx[rng.choice(len(idx), 4000, replace=False)]:
        hu[z:z + rng.integers(1, 5), y, x] = -1000.0
    hu[lungs] += rng.normal(0.0, 1.0, int(lungs.sum())).astype(np.float32)
    return vol.with_array(hu), lungs


def _rect_slice(hu, k):
    """Slice ``k`` of a 3 mm rectangular-profile scan of ``hu`` (0.5 mm slices): 6 slices' width, centred on 6k."""
    w = np.ones(7)
    w[0] = w[-1] = 0.5
    return np.tensordot(w / w.sum(), hu[6 * k - 3:6 * k + 4], axes=(0, 0))


def test_rect_target_matches_an_axial_scans_slices(thin_chest):
    """Thin -> 3 mm with the target's profile named: closer to a rectangular-profile scan of the same object
    (L1 and the emphysema index) than the default Gaussian, which averages over more z."""
    vol, lungs = thin_chest
    figures = {}
    for name, target in (("gaussian", "kernel=standard,dose=1,thickness=3"),
                         ("rect", "kernel=standard,dose=1,thickness=3,profile=rect")):
        plan = make_plan(vol, "kernel=standard,dose=1,thickness=0.5", target, method="z_profile")
        out = execute(plan, vol).result.volume
        assert out.spacing[0] == 3.0 and out.meta["SliceThickness"] == "3"  # nominal thickness and spacing
        ks = range(2, out.shape[0] - 2)
        l1 = np.mean([np.abs(out.hu[k] - _rect_slice(vol.hu, k))[lungs[6 * k]].mean() for k in ks])
        ei = np.mean([(out.hu[k][lungs[6 * k]] < -950).mean() for k in ks])
        figures[name] = (l1, ei, plan)
    ei_truth = np.mean([(_rect_slice(vol.hu, k)[lungs[6 * k]] < -950).mean() for k in range(2, 14)])
    (l1_g, ei_g, plan_g), (l1_r, ei_r, plan_r) = figures["gaussian"], figures["rect"]
    assert plan_r.target_signature.thickness_mm == pytest.approx(3.0 * PROFILE_FWHM["rect"])
    assert "rect slice profile" in plan_r.target_signature.sources["thickness_mm"].detail
    assert plan_g.target_signature.thickness_mm == 3.0
    assert plan_r.target.spec().endswith("thickness=3,profile=rect")
    # measured: L1 11.0 -> 9.2 HU; emphysema index 1.04 % (Gaussian) and 2.60 % (rect) for 2.64 %
    assert l1_r < 0.9 * l1_g
    assert abs(ei_r - ei_truth) < 0.25 * abs(ei_g - ei_truth)


def test_a_rect_source_is_modelled_narrower(thin_chest):
    vol, _ = thin_chest
    plan = make_plan(vol, "kernel=standard,dose=1,thickness=0.5,profile=rect", "thickness=0.5", method="z_profile")
    assert plan.source.profile == "rect" and plan.source.ssp_fwhm == pytest.approx(0.5 * PROFILE_FWHM["rect"])
    assert plan.source_signature.thickness_mm == pytest.approx(plan.source.ssp_fwhm)
    assert plan.target.profile is None  # the target named its own thickness (and so its own, default, profile)


@pytest.mark.parametrize("texture", ["clean", "target"])
def test_a_scan_without_measurable_noise_runs_the_chain(thin_chest, texture):
    """Noise-free outside the lungs, the source's noise reads 0 HU: the chain's noise bookkeeping divided by it."""
    vol, _ = thin_chest
    plan = make_plan(vol, "kernel=standard,dose=1,thickness=0.5", "kernel=standard,dose=1,thickness=3",
                     method="classical", texture=texture)
    out = execute(plan, vol).result
    assert out.volume.shape[0] == 16 and np.isfinite(out.volume.hu).all()


def test_a_noise_free_scan_in_the_target_texture():
    """Source noise 0 HU and no dose change: the target's noise is 0 too; nothing is inserted (no division by it)."""
    vol, _ = synthetic_chest(shape=(12, 64, 64), spacing=(2.0, 3.0, 3.0), seed=4)
    plan = make_plan(vol, "auto", "kernel=sharp", method="classical", texture="target")
    result = execute(plan, vol).result
    assert np.isfinite(result.volume.hu).all()
    step = next(s for s in result.steps if s["method"] == "noise_insertion")
    assert not step["done"] and "0 HU" in step["note"]


def test_a_learned_models_output_is_tagged_with_the_nominal_thickness():
    vol, _ = synthetic_chest(shape=(24, 96, 96), spacing=(1.0, 1.5, 1.5), noise=30.0, seed=2)
    plan = make_plan(vol, "kernel=sharp,dose=0.5,thickness=1", "kernel=smooth,dose=1,thickness=3,profile=rect",
                     method="ctn-conditioned-v2")
    out = execute(plan, vol).result.volume
    assert out.spacing[0] == 3.0 and out.meta["SliceThickness"] == "3"  # not the modelled 2.04


def test_label_model_coverage_counts_a_rectangle_as_its_gaussian():
    from CTNormalizeLib.models.registry import find_model

    rect, gauss = parse_spec("kernel=sharp,dose=1,thickness=1.2,profile=rect"), parse_spec("kernel=sharp,dose=1,thickness=1.2")
    target = parse_spec("kernel=smooth,thickness=1.2")
    pkg = find_model(gauss, target, name="ctn-unet2d-kernel-v1")
    assert pkg is not None and pkg.why_not(gauss, target) is None
    # a 1.2 mm rectangle is a 0.816 mm Gaussian, below the trained 1 mm
    assert "0.816" in pkg.why_not(rect, target) and find_model(rect, target, name="ctn-unet2d-kernel-v1") is None


def test_target_like_with_only_a_spacing_keeps_the_references_nominal_thickness():
    vol, _ = synthetic_chest(shape=(24, 80, 80), spacing=(1.0, 3.0, 3.0), noise=25.0, seed=5)
    ref, _ = synthetic_chest(shape=(8, 80, 80), spacing=(5.0, 3.0, 3.0), noise=15.0, seed=6)
    ref.meta.update({"SliceThickness": "5", "AcquisitionType": "SEQUENCED"})
    plan = make_plan(vol, "kernel=standard,dose=1,thickness=1", "spacing=2", target_like=ref, method="z_profile")
    assert plan.target.thickness == 5.0 and plan.target.profile == "rect" and plan.target.spacing == 2.0
    assert plan.target_signature.thickness_mm == pytest.approx(5.0 * PROFILE_FWHM["rect"])
    assert plan.target.ssp_fwhm == pytest.approx(plan.target_signature.thickness_mm)
