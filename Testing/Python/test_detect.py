"""Noise estimation, relative dose, and protocol detection from tags and image noise."""

import math

import numpy as np
import pytest

from CTNormalizeLib import Volume
from CTNormalizeLib.io import read_volume
from CTNormalizeLib.protocols import parse_spec
from CTNormalizeLib.protocols.detect import detect_protocol
from CTNormalizeLib.protocols.noise import (NOISE_REFERENCE, REFERENCE_PIXEL_MM, NoiseEstimate, calibrate_reference,
                                            estimate_dose, estimate_noise, pixel_factor, reference_std, relative_dose)


def phantom(sigma: float, n: int = 128, nz: int = 6, seed: int = 0, ramp: float = 0.0, air_sigma=None,
            clip=None, pixel: float = 1.0, meta=None) -> Volume:
    """Air, an elliptic body with a thick fat layer around muscle, lungs; white Gaussian noise.

    ``ramp`` adds a smooth anatomical gradient (HU across the body) that must not count as noise.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:n, :n] / (n / 2.0) - 1.0
    hu = np.full((n, n), -1000.0)
    hu[(x / 0.9) ** 2 + (y / 0.7) ** 2 < 1] = -100.0
    hu[(x / 0.65) ** 2 + (y / 0.45) ** 2 < 1] = 40.0
    for cx in (-0.3, 0.3):
        hu[((x - cx) / 0.15) ** 2 + (y / 0.25) ** 2 < 1] = -850.0
    body = hu > -900
    hu = hu + np.where(body, ramp * x, 0.0)
    noise = rng.normal(0.0, 1.0, (nz, n, n))
    scale = np.where(body, sigma, sigma if air_sigma is None else air_sigma)
    vol = (hu[None] + noise * scale[None]).astype(np.float32)
    if clip is not None:
        vol = np.maximum(vol, clip)
    return Volume(vol, (2.0, pixel, pixel), meta=dict(meta or {}))


# ----------------------------------------------------------------------------- noise

@pytest.mark.parametrize("sigma", [10.0, 40.0])
def test_noise_estimate_recovers_white_noise(sigma):
    est = estimate_noise(phantom(sigma))
    for std, n in ((est.air_std, est.air_voxels), (est.fat_std, est.fat_voxels), (est.muscle_std, est.muscle_voxels)):
        assert n > 2000
        assert std == pytest.approx(sigma, rel=0.08)


def test_anatomy_gradient_does_not_inflate_noise():
    flat = estimate_noise(phantom(12.0, seed=3))
    ramp = estimate_noise(phantom(12.0, seed=3, ramp=60.0))  # 60 HU across the body
    assert ramp.tissue_std == pytest.approx(flat.tissue_std, rel=0.05)
    naive = float(np.std(phantom(12.0, seed=3, ramp=60.0).hu[:, 60:68, 40:88]))
    assert naive > 1.3 * ramp.tissue_std  # a plain std in the same muscle would be inflated


def test_noise_quarter_dose_doubles_std():
    full, quarter = estimate_noise(phantom(10.0, seed=1)), estimate_noise(phantom(20.0, seed=2))
    ratio = relative_dose(quarter.tissue_std, "standard", 1.0) / relative_dose(full.tissue_std, "standard", 1.0)
    assert ratio == pytest.approx(0.25, rel=0.1)


def test_clipped_air_is_flagged_and_not_used():
    est = estimate_noise(phantom(20.0, clip=-1024.0))
    assert est.air_clipped_fraction > 0.05 and not est.air_usable
    d = estimate_dose(est, "standard", 1.0)
    assert d.dose_air is None and "clipped" in d.detail


def test_padding_outside_fov_ignored():
    vol = phantom(15.0)
    y, x = np.mgrid[:128, :128] / 64.0 - 1.0
    vol.hu[:, x ** 2 + y ** 2 > 0.98] = -3024.0
    est = estimate_noise(vol)
    assert est.air_std == pytest.approx(15.0, rel=0.1)


def test_window_is_physical():
    # The same noise texture sampled at a finer pixel size gets a wider window in pixels.
    assert estimate_noise(phantom(10.0, pixel=0.5)).window > estimate_noise(phantom(10.0, pixel=1.0)).window


# ----------------------------------------------------------------------------- relative dose

def test_relative_dose_scaling():
    ref = reference_std("standard", 1.0)
    assert ref == NOISE_REFERENCE["standard"]["tissue"]
    assert relative_dose(ref, "standard", 1.0) == pytest.approx(1.0)
    assert relative_dose(2 * ref, "standard", 1.0) == pytest.approx(0.25)
    # thicker slices average noise: std ~ 1/sqrt(thickness)
    assert relative_dose(ref / 2, "standard", 4.0) == pytest.approx(1.0)
    assert relative_dose(ref, "B70f", 1.0) > relative_dose(ref, "B30f", 1.0)  # sharper kernel: more noise expected
    with pytest.raises(ValueError):
        relative_dose(0.0, "standard", 1.0)


def test_pixel_factor_model():
    for k in ("smooth", "standard", "sharp", "very-sharp"):
        assert pixel_factor(k, REFERENCE_PIXEL_MM) == pytest.approx(1.0)
        assert pixel_factor(k, None) == 1.0
    # finer pixels show more of a sharp kernel's noise; a smooth kernel hardly cares
    f = {k: [pixel_factor(k, p) for p in (1.0, 0.7, 0.5, 0.35)] for k in ("smooth", "very-sharp")}
    assert all(abs(v - 1) < 0.03 for v in f["smooth"])
    assert f["very-sharp"] == sorted(f["very-sharp"]) and f["very-sharp"][0] < 0.8 < 1.2 < f["very-sharp"][-1]
    assert relative_dose(10.0, "very-sharp", 1.0, pixel_mm=0.5) > relative_dose(10.0, "very-sharp", 1.0, pixel_mm=0.7)


def test_calibrate_reference_round_trip():
    est = NoiseEstimate(air_std=8.0, air_voxels=10000, fat_std=11.0, fat_voxels=5000,
                        muscle_std=13.0, muscle_voxels=5000)
    table = calibrate_reference({"smooth": est, "standard": {"tissue": 20.0, "air": 10.0}, "sharp": 40.0,
                                 "B70f": 80.0}, thickness=4.0)
    assert table["smooth"] == {"tissue": pytest.approx(24.0), "air": pytest.approx(16.0)}
    assert set(table) == {"smooth", "standard", "sharp", "very-sharp"}
    # measured at 4 mm full dose -> dose 1 at 4 mm with that table
    assert relative_dose(est.tissue_std, "smooth", 4.0, table) == pytest.approx(1.0)
    assert relative_dose(40.0, "sharp", 4.0, table) == pytest.approx(1.0)
    # measured at 0.5 mm pixels: the table is moved to the reference pixel and back
    table = calibrate_reference({"very-sharp": 30.0}, thickness=1.0, pixel_mm=0.5)
    assert table["very-sharp"]["air"] < 30.0
    assert relative_dose(30.0, "very-sharp", 1.0, table, "air", pixel_mm=0.5) == pytest.approx(1.0)


def test_dose_confidence_grows_with_voxels_and_drops_for_unknown_kernel():
    small = estimate_noise(phantom(15.0, n=96, nz=1))
    big = estimate_noise(phantom(15.0, n=128, nz=6))
    ds, db = estimate_dose(small, "standard", 1.0), estimate_dose(big, "standard", 1.0)
    assert 0 < ds.confidence < db.confidence <= 0.8
    unknown = estimate_dose(big, None, 1.0, kernel_known=False)
    assert unknown.confidence == pytest.approx(db.confidence * 0.5, rel=0.02)
    assert "assumed standard" in unknown.detail


def test_dose_confidence_drops_when_air_and_tissue_disagree():
    ref = NOISE_REFERENCE["standard"]
    agree = estimate_noise(phantom(20.0, air_sigma=20.0 * ref["air"] / ref["tissue"]))  # as in the reference
    disagree = estimate_noise(phantom(20.0, air_sigma=60.0))
    a, d = estimate_dose(agree, "standard", 1.0), estimate_dose(disagree, "standard", 1.0)
    assert a.dose == pytest.approx(a.dose_tissue, rel=0.15)
    assert a.dose_tissue == pytest.approx(d.dose_tissue, rel=0.1)
    assert d.dose == pytest.approx(d.dose_air) and d.dose < 0.3 * d.dose_tissue  # air is the primary estimate
    assert d.confidence < 0.5 * a.confidence


# ----------------------------------------------------------------------------- detection

def test_detect_ct_small_from_tags(ct_small_path):
    vol = read_volume(ct_small_path, validate=False)
    p = detect_protocol(vol)
    assert (p.kernel, p.kernel_name) == ("standard", "STANDARD")
    assert p.thickness == 5.0 and p.sources["thickness"].source == "tag"
    assert p.mas == 170 and p.sources["mas"].source == "tag" and "Exposure" in p.sources["mas"].detail
    assert p.ctdivol is None and p.sources["ctdivol"].source == "unknown"
    assert p.spacing == 5.0
    assert p.dose is not None and p.sources["dose"].source == "image"
    assert 0 < p.sources["dose"].confidence < 0.5  # one small slice: little to measure
    for name in ("kernel", "thickness", "spacing", "mas", "ctdivol", "dose"):
        s = p.sources[name]
        assert 0.0 <= s.confidence <= 1.0 and s.detail


def test_detect_without_tags_uses_geometry():
    vol = phantom(15.0)
    p = detect_protocol(vol)
    assert p.kernel is None and p.sources["kernel"].source == "unknown"
    assert p.thickness == 2.0 and p.sources["thickness"].source == "image" and p.sources["thickness"].confidence < 1
    assert p.mas is None and p.dose is not None


def test_detect_unknown_vendor_kernel_does_not_crash():
    vol = phantom(15.0, meta={"ConvolutionKernel": "STANDRD", "SliceThickness": "2"})
    p = detect_protocol(vol)
    assert p.kernel is None and p.kernel_name == "STANDRD"
    assert p.sources["kernel"].confidence <= 0.2 and "STANDARD" in p.sources["kernel"].detail
    known = detect_protocol(phantom(15.0, meta={"ConvolutionKernel": "STANDARD", "SliceThickness": "2"}))
    assert p.dose == pytest.approx(known.dose)  # standard assumed ...
    assert p.sources["dose"].confidence < known.sources["dose"].confidence  # ... with less confidence


def test_detect_mas_from_current_and_time():
    p = detect_protocol(phantom(15.0, meta={"XRayTubeCurrent": "200", "ExposureTime": "500"}))
    assert p.mas == pytest.approx(100.0) and p.sources["mas"].confidence < 0.9
    p = detect_protocol(phantom(15.0, meta={"CTDIvol": "4.5"}))
    assert p.ctdivol == 4.5 and p.sources["ctdivol"].source == "tag"


def test_detect_dose_follows_noise():
    meta = {"ConvolutionKernel": "B30f", "SliceThickness": "1"}
    full = detect_protocol(phantom(25.0, seed=1, meta=meta))
    low = detect_protocol(phantom(50.0, seed=2, meta=meta))
    assert 0.01 < low.dose < full.dose < 4.0  # inside the clip range, so the ratio means something
    assert low.dose / full.dose == pytest.approx(0.25, rel=0.1)


def test_overrides_win_and_drive_the_dose():
    vol = phantom(20.0, meta={"ConvolutionKernel": "B70f", "SliceThickness": "1"})
    noise = estimate_noise(vol)
    base = detect_protocol(vol, noise=noise)
    p = detect_protocol(vol, parse_spec("kernel=standard,thickness=4"), noise=noise)
    assert (p.kernel, p.kernel_name, p.thickness) == ("standard", None, 4.0)
    assert p.sources["kernel"].source == "user" and p.sources["thickness"].source == "user"
    expected = (reference_std("standard", 4.0, "air", pixel_mm=noise.pixel_mm) / noise.air_std) ** 2
    assert p.dose == pytest.approx(min(4.0, max(0.01, expected)))
    assert p.dose != pytest.approx(base.dose)
    q = detect_protocol(vol, parse_spec("dose=0.5,kernel=Br40"))
    assert q.dose == 0.5 and q.sources["dose"].source == "user" and q.kernel_name == "Br40"
    assert q.thickness == 1.0 and q.sources["thickness"].source == "tag"


def test_detect_non_finite_leaves_dose_unknown():
    vol = phantom(10.0)
    vol.hu[0, 0, 0] = np.nan
    p = detect_protocol(vol)
    assert p.dose is None and p.sources["dose"].source == "unknown"


def test_lung1_detection_runs(lung1_path):
    p = detect_protocol(read_volume(lung1_path))
    assert p.thickness == 5.0 and p.dose is not None and math.isfinite(p.dose)
    assert "kernel unknown" in p.sources["dose"].detail


# ----------------------------------------------------------------------------- against the simulator

@pytest.fixture(scope="module")
def simulated():
    """Full- and quarter-dose scans of one phantom (seed 11, not the calibration seed 7)."""
    from CTNormalizeLib.protocols import Protocol
    from CTNormalizeLib.simulate.phantom import make_phantom
    from CTNormalizeLib.simulate.scanner import project_truth, simulate_scan

    truth = make_phantom(11, shape=(16, 192, 192), spacing=(0.5, 1.0, 1.0)).volume
    proj = project_truth(truth)
    return {(k, d): simulate_scan(truth, Protocol(kernel=k, dose=d, thickness=2.0), seed=5, projections=proj)
            for k in ("smooth", "very-sharp") for d in (1.0, 0.25)}


@pytest.mark.slow
@pytest.mark.parametrize("kernel", ["smooth", "very-sharp"])
@pytest.mark.parametrize("dose", [1.0, 0.25])
def test_dose_estimate_on_simulated_scans(simulated, kernel, dose):
    # other pixel size (1.0 mm) and thickness (2 mm) than the calibration (0.7 mm, 1 mm)
    p = detect_protocol(simulated[(kernel, dose)], parse_spec(f"kernel={kernel},thickness=2"))
    assert p.dose == pytest.approx(dose, rel=0.25)
    assert p.sources["dose"].source == "image" and p.sources["dose"].confidence > 0.3


@pytest.mark.slow
def test_noise_reference_matches_simulator():
    from CTNormalizeLib.protocols.noise import calibrate_from_simulator

    table = calibrate_from_simulator(shape=(8, 274, 274))
    for k, ref in NOISE_REFERENCE.items():
        assert table[k]["air"] == pytest.approx(ref["air"], rel=0.15), k
        assert table[k]["tissue"] == pytest.approx(ref["tissue"], rel=0.2), k
