"""Lung mask and emphysema index on simulator phantoms (held-out seeds >= 1000) with ground truth."""

import numpy as np
import pytest

from CTNormalizeLib.protocols import parse_spec
from CTNormalizeLib.quantify import emphysema_index, lung_mask
from CTNormalizeLib.simulate import phantom as simulate
from CTNormalizeLib.simulate import simulate_scan

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


def lungs_with_small_airways(ph):
    """The phantom's lungs plus the airways inside the pleural space (not the trachea).

    The phantom's ``lungs`` exclude every airway, walls included. Common lung masks (and this
    engine) keep the intrapulmonary airways, whose in-plane walls look like vessels; this is
    the ground truth in that convention.
    """
    from scipy import ndimage as ndi

    lungs = ph.masks["lungs"]
    disk = np.zeros((1, 7, 7), bool)
    disk[0] = np.hypot(*np.mgrid[-3:4, -3:4]) <= 3
    pleural = np.stack([ndi.binary_fill_holes(s) for s in ndi.binary_closing(lungs, disk)])
    inside = ph.masks["airways"] & pleural
    return lungs | inside


def _truth_sides(ph):
    """Left/right truth in the small-airways convention: each airway voxel goes to the nearer lung."""
    from scipy import ndimage as ndi

    full = lungs_with_small_airways(ph)
    left, right = ph.masks["lung_left"], ph.masks["lung_right"]
    extra = full & ~(left | right)
    d_left = ndi.distance_transform_edt(~left, sampling=ph.volume.spacing)
    d_right = ndi.distance_transform_edt(~right, sampling=ph.volume.spacing)
    return full, left | (extra & (d_left <= d_right)), right | (extra & (d_left > d_right))


@pytest.mark.parametrize("which", ["healthy", "emphysematous"])
def test_lung_mask_dice_on_phantom_truth(which, request):
    ph = request.getfixturevalue(which)
    m = lung_mask(ph.volume)
    full, left, right = _truth_sides(ph)
    assert dice(m.lungs, full) >= 0.95
    assert dice(m.left, left) >= 0.95
    assert dice(m.right, right) >= 0.95
    # Against the phantom's own lungs (all airways excluded) the kept airways cost a few points:
    # measured 0.950 (seed 1010, small lungs) and 0.963 (seed 1011).
    assert dice(m.lungs, ph.masks["lungs"]) >= 0.94


@pytest.mark.parametrize("spec", ["kernel=smooth,dose=1,thickness=1", "kernel=sharp,dose=0.1,thickness=5",
                                  "kernel=very-sharp,dose=0.25,thickness=2"])
def test_lung_mask_dice_on_simulated_scans(spec, emphysematous):
    ph = emphysematous
    scan = simulate_scan(ph.volume, parse_spec(spec), seed=3)
    m = lung_mask(scan)
    full, _, _ = _truth_sides(ph)
    assert dice(m.lungs, truth_on_scan_grid(full, ph.volume, scan)) >= 0.95, spec
    assert dice(m.lungs, truth_on_scan_grid(ph.masks["lungs"], ph.volume, scan)) >= 0.94, spec


def _engine_bounds(ph):
    """Where the engine's LAA% must lie on the noise-free truth, from the lung-definition difference.

    The engine's lungs are the phantom's lungs plus the intrapulmonary airways (share ``s`` of the
    phantom's lung voxels; lumen air is below -950, walls are not). So its LAA% lies between the
    ground truth diluted by the extra voxels, ``GT / (1 + s)``, and ``(GT + 100 s) / (1 + s)`` if
    they were all below -950; 0.3 pt more either way for the segmentation's own boundary (Dice
    >= 0.95 against the same convention).
    """
    gt = ph.info["laa950_percent"]
    s = float((lungs_with_small_airways(ph) & ~ph.masks["lungs"]).sum() / ph.masks["lungs"].sum())
    return gt / (1 + s) - 0.3, (gt + 100 * s) / (1 + s) + 0.3


@pytest.mark.parametrize("seed,fraction", [(1011, 0.2), (1012, 0.05), (1013, 0.3)])
def test_laa_engine_mask_on_truth_within_the_definition_difference(seed, fraction):
    """Measured (40x128x128 at 1.5 mm): 1011 at 20 %: 18.97 (airway share 6.2 %); 1012, 1013 and 1016
    at 20 %: 19.07, 19.10, 18.95; at 5 %: 4.91-5.11. The bronchial walls dilute, the lumen air adds."""
    ph = simulate.make_phantom(seed, shape=SHAPE, spacing=SPACING, emphysema=fraction, nodules=0)
    assert emphysema_index(ph.volume, lung=ph.masks["lungs"]).laa_percent == pytest.approx(ph.info["laa950_percent"],
                                                                                     abs=0.01)
    lo, hi = _engine_bounds(ph)
    engine = emphysema_index(ph.volume).laa_percent
    assert lo <= engine <= hi
    # in the small-airways convention the engine's LAA% is within 0.5 pt of the truth's
    assert engine == pytest.approx(emphysema_index(ph.volume, lung=lungs_with_small_airways(ph)).laa_percent, abs=0.5)


def _noise_free(truth, protocol):
    from CTNormalizeLib.simulate import ScannerConfig

    return simulate_scan(truth, protocol, seed=5, detector=ScannerConfig(i0_ref=6.9e13, electronic_std=0.0))


def test_laa_on_smooth_full_dose_scan_loses_only_resolution(emphysematous):
    """What a smooth full-dose 1 mm scan does to LAA-950, with the phantom's own lung mask.

    Noise at full dose moves LAA% by well under 0.5 pt (against a noise-free scan with the same
    kernel and slice). Resolution does not: the smooth kernel (MTF50 0.30 c/mm, a Gaussian PSF of
    sigma ~0.6 mm in-plane plus the pixel) blooms every structure brighter than parenchyma into the
    -993 HU lesions by about 1.7 sigma (-950 is only 43 HU above the lesion), and erodes lesions a
    few mm across. Measured here (40x128x128, 1.5 mm pixels, seeds 1011-1013, 1016): 79-86 % of
    the ground truth (20 % -> 16.6-17.1; 5 % -> 3.9-4.1). The bounds catch a scanner that blurs
    more, or an emphysema model that goes back to sub-resolution texture (the phantom 1.0 read
    12.5 of 20 here).
    """
    ph = emphysematous
    gt = ph.info["laa950_percent"]
    protocol = parse_spec("kernel=smooth,dose=1,thickness=1")
    scan = simulate_scan(ph.volume, protocol, seed=5)
    lungs = truth_on_scan_grid(ph.masks["lungs"], ph.volume, scan)
    noisy = emphysema_index(scan, lung=lungs).laa_percent
    clean = emphysema_index(_noise_free(ph.volume, protocol), lung=lungs).laa_percent
    assert noisy == pytest.approx(clean, abs=0.5)
    assert 0.72 * gt < noisy < gt
    # the engine's own mask on the scan: the definition difference again (bronchial walls dilute)
    engine = emphysema_index(scan).laa_percent
    assert engine == pytest.approx(noisy, rel=0.08)
    in_convention = emphysema_index(scan, lung=truth_on_scan_grid(lungs_with_small_airways(ph), ph.volume, scan)).laa_percent
    assert engine == pytest.approx(in_convention, abs=0.5)


@pytest.mark.xfail(strict=True, reason=(
    "Resolution, not the phantom or the quantification: a realistic smooth kernel (PSF sigma ~0.6 mm) "
    "erodes emphysema lesions of a few mm and blooms vessels, airway walls and pleura into them, so "
    "the scan reads 79-86 % of the truth-grid LAA (seed 1011: 20.0 -> 17.1 with the phantom's mask; a "
    "noise-free scan reads the same 17.1). Within 0.5 pt needs a resolution-matched ground truth."))
def test_laa_on_smooth_full_dose_scan_within_half_point(emphysematous):
    ph = emphysematous
    scan = simulate_scan(ph.volume, parse_spec("kernel=smooth,dose=1,thickness=1"), seed=5)
    lungs = truth_on_scan_grid(ph.masks["lungs"], ph.volume, scan)
    assert emphysema_index(scan, lung=lungs).laa_percent == pytest.approx(ph.info["laa950_percent"], abs=0.5)
