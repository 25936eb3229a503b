"""Lung mask and emphysema index on simulator phantoms (held-out seeds >= 1000) with ground truth."""

import numpy as np
import pytest

simulate = pytest.importorskip("CTNormalizeLib.simulate.phantom")

from CTNormalizeLib.protocols import parse_spec  # noqa: E402
from CTNormalizeLib.quantify import emphysema, lung_mask  # noqa: E402
from CTNormalizeLib.simulate import simulate_scan  # noqa: E402

pytestmark = pytest.mark.slow

SHAPE = (40, 128, 128)
SPACING = (1.0, 1.5, 1.5)


def dice(a, b):
    return 2.0 * np.count_nonzero(a & b) / (a.sum() + b.sum())


def truth_on_scan_grid(mask, truth_vol, scan):
    """Truth mask on the scan's slices: scan slice k is centred on truth z = k * scan spacing."""
    idx = np.round(np.arange(scan.shape[0]) * scan.spacing[0] / truth_vol.spacing[0]).astype(int)
    return mask[np.clip(idx, 0, mask.shape[0] - 1)]


@pytest.fixture(scope="module")
def healthy():
    return simulate.make_phantom(1010, shape=SHAPE, spacing=SPACING, emphysema=0.0, nodules=0)


@pytest.fixture(scope="module")
def emphysematous():
    return simulate.make_phantom(1011, shape=SHAPE, spacing=SPACING, emphysema=0.2, nodules=0)


@pytest.mark.parametrize("which", ["healthy", "emphysematous"])
def test_lung_mask_dice_on_phantom_truth(which, request):
    ph = request.getfixturevalue(which)
    m = lung_mask(ph.volume)
    assert dice(m.lungs, ph.masks["lungs"]) >= 0.95
    assert dice(m.left, ph.masks["lung_left"]) >= 0.95
    assert dice(m.right, ph.masks["lung_right"]) >= 0.95


@pytest.mark.parametrize("spec", ["kernel=smooth,dose=1,thickness=1", "kernel=sharp,dose=0.1,thickness=5",
                                  "kernel=very-sharp,dose=0.25,thickness=2"])
def test_lung_mask_dice_on_simulated_scans(spec, emphysematous):
    ph = emphysematous
    scan = simulate_scan(ph.volume, parse_spec(spec), seed=3)
    m = lung_mask(scan)
    truth = truth_on_scan_grid(ph.masks["lungs"], ph.volume, scan)
    assert dice(m.lungs, truth) >= 0.95, spec


def test_laa_engine_mask_close_to_ground_truth(emphysematous):
    """The lung mask's share of the LAA% error, on the noise-free truth and on a smooth full-dose scan.

    The phantom's ground-truth lungs exclude every airway wall, while the engine keeps bronchial
    walls that run in-plane (they look like vessels, which stay lung): on seed 1011 this costs
    about 0.9 pt (19.1 vs 20.0). The bound below is relative (5 % of the value) so it does not
    depend on this seed's emphysema level.
    """
    ph = emphysematous
    gt = ph.info["laa950_percent"]
    assert emphysema(ph.volume, lung=ph.masks["lungs"]).laa_percent == pytest.approx(gt, abs=0.01)
    assert emphysema(ph.volume).laa_percent == pytest.approx(gt, rel=0.05)
    scan = simulate_scan(ph.volume, parse_spec("kernel=smooth,dose=1,thickness=1"), seed=5)
    with_truth_mask = emphysema(scan, lung=ph.masks["lungs"]).laa_percent
    assert emphysema(scan).laa_percent == pytest.approx(with_truth_mask, rel=0.08)


@pytest.mark.xfail(strict=False, reason=(
    "The engine's lung mask keeps in-plane bronchial walls that the phantom's ground truth excludes: "
    "about -0.9 pt on seed 1011 (19.1 vs 20.0)."))
def test_laa_on_truth_volume_within_half_point(emphysematous):
    ph = emphysematous
    assert emphysema(ph.volume).laa_percent == pytest.approx(ph.info["laa950_percent"], abs=0.5)


@pytest.mark.xfail(strict=False, reason=(
    "Simulator physics, not the quantification: the smooth kernel blurs the phantom's small -990 HU "
    "emphysema clusters above -950 HU, so the scan's LAA% falls far below the truth's even with the "
    "true lung mask (seed 1011: truth 20.0, scan 12.4 with the true mask, 11.7 with the engine's)."))
def test_laa_on_smooth_full_dose_scan_within_half_point(emphysematous):
    ph = emphysematous
    scan = simulate_scan(ph.volume, parse_spec("kernel=smooth,dose=1,thickness=1"), seed=5)
    assert emphysema(scan).laa_percent == pytest.approx(ph.info["laa950_percent"], abs=0.5)
