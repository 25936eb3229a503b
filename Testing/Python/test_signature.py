"""Measured image-quality signatures: noise in HU, the kernel from the noise texture, z, size."""

import math

import numpy as np
import pytest

from CTNormalizeLib import Volume
from CTNormalizeLib.classical.noise_insertion import shaped_noise
from CTNormalizeLib.protocols import KERNEL_CLASSES, Protocol
from CTNormalizeLib.protocols.protocol import FieldSource
from CTNormalizeLib.signature import Transfer, class_transfer, classify_transfer, measure_signature
from CTNormalizeLib.signature.kernel_fit import fit_kernel
from CTNormalizeLib.signature.nps import measure_nps

PX = 0.7
FN = 0.5 / PX


def body_phantom(n=256, nz=8, pixel=PX) -> np.ndarray:
    """Air around an elliptic body: a fat layer, muscle, two lungs (noise-free HU)."""
    y, x = np.mgrid[:n, :n] / (n / 2.0) - 1.0
    hu = np.full((n, n), -1000.0, np.float32)
    hu[(x / 0.75) ** 2 + (y / 0.55) ** 2 < 1] = -100.0
    hu[(x / 0.6) ** 2 + (y / 0.42) ** 2 < 1] = 40.0
    for cx in (-0.28, 0.28):
        hu[((x - cx) / 0.18) ** 2 + (y / 0.28) ** 2 < 1] = -860.0
    return np.repeat(hu[None], nz, axis=0)


def noisy(transfer, sigma, seed=0, n=256, nz=8, meta=None):
    hu = body_phantom(n, nz)
    noise = shaped_noise(hu.shape, (1.0, PX, PX), transfer, seed=seed)
    return Volume(hu + np.float32(sigma) * noise, (1.0, PX, PX), meta=dict(meta or {}))


# classic FBP windows on the detector's Nyquist, times the blur of linear interpolation
# in back-projection: analytic curves the fit has never seen as such
CLASSIC = {
    "ramp+linear": lambda f: np.sinc(f * PX) ** 2,
    "shepp-logan+linear": lambda f: np.sinc(f / (2 * FN)) * np.sinc(f * PX) ** 2,
    "cosine": lambda f: np.cos(np.pi * np.minimum(f, FN) / (2 * FN)),
    "hamming": lambda f: 0.54 + 0.46 * np.cos(np.pi * np.minimum(f, FN) / FN),
    "hann": lambda f: 0.5 + 0.5 * np.cos(np.pi * np.minimum(f, FN) / FN),
}


class Curve:
    """A transfer given as a function (what ``shaped_noise`` accepts through ``as_transfer``)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, f):
        return self.fn(np.abs(np.asarray(f, float)))


def analytic_mtf50(fn) -> float:
    f = np.linspace(0, FN, 4001)
    w = fn(f)
    return float(f[np.argmax(w < 0.5)]) if (w < 0.5).any() else math.inf


@pytest.fixture(autouse=True)
def _curves_are_transfers(monkeypatch):
    from CTNormalizeLib.signature import kernel_class

    real = kernel_class.as_transfer
    monkeypatch.setattr(kernel_class, "as_transfer", lambda k: k if isinstance(k, Curve) else real(k))
    import CTNormalizeLib.classical.noise_insertion as ni

    monkeypatch.setattr(ni, "as_transfer", lambda k: k if isinstance(k, Curve) else real(k))


@pytest.mark.parametrize("kernel", KERNEL_CLASSES)
@pytest.mark.parametrize("sigma", [8.0, 40.0])
def test_noise_std_in_hu_whatever_the_kernel(kernel, sigma):
    sig = measure_signature(noisy(class_transfer(kernel), sigma, seed=1))
    assert sig.noise_hu == pytest.approx(sigma, rel=0.08)
    assert sig.noise_by_region["air"] == pytest.approx(sigma, rel=0.1)
    assert sig.sources["noise_hu"].source == "image"


def test_the_signature_says_where_its_noise_was_measured():
    """Fat and muscle are the trusted regions; a body of other soft tissue (here 150 HU) is a stand-in, and the
    signature says so (what the per-scan blend choice asks, ``Signature.noise_from_tissue``)."""
    from CTNormalizeLib.signature.signature import NOISE_REGIONS

    from CTNormalizeLib.signature.signature import Signature

    sig = measure_signature(noisy(class_transfer("standard"), 20.0, seed=1))
    assert sig.noise_region == "tissue" and sig.noise_from_tissue
    assert sig.to_dict()["noise_region"] == "tissue" and Signature.from_dict(sig.to_dict()).noise_from_tissue
    old = {k: v for k, v in sig.to_dict().items() if k != "noise_region"}  # written before the field
    assert Signature.from_dict(old).noise_region == "tissue"
    hu = body_phantom()
    hu[(hu > -200) & (hu < 100)] = 150.0
    noise = shaped_noise(hu.shape, (1.0, PX, PX), class_transfer("standard"), seed=1)
    sig = measure_signature(Volume(hu + np.float32(20.0) * noise, (1.0, PX, PX)))
    assert sig.noise_region == "soft" and sig.noise_region in NOISE_REGIONS and not sig.noise_from_tissue
    assert "NOISE_FROM_SOFT_TISSUE" in [w["code"] for w in sig.warnings]
    assert sig.noise_hu == pytest.approx(20.0, rel=0.15)


def test_a_scan_of_few_slices_reads_its_kernel_from_as_many_rois_as_a_long_one():
    """A 4-slice reference scan took 24 ROIs per slice (96): its measured MTF50 moved with the ROI draw by more
    than an engine change should (sd 0.01 c/mm on the held-out references). The scan's budget is shared by the
    slices read, so its kernel no longer depends on which ROIs were drawn."""
    from CTNormalizeLib.signature.kernel_fit import fit_kernel
    from CTNormalizeLib.signature.nps import TOTAL_ROIS, measure_nps, rois_per_slice
    from CTNormalizeLib.signature.regions import slice_regions

    assert rois_per_slice(16) == rois_per_slice(300) == 24 and rois_per_slice(4) == 96
    vol = noisy(class_transfer("standard"), 25.0, seed=5, n=512, nz=4)  # ~400 candidate ROIs per slice
    regions = slice_regions(vol.hu, vol.spacing)
    spread = {}
    for per in (24, None):
        reads = [measure_nps(vol.hu, vol.spacing, regions, region="air", seed=s, max_rois_per_slice=per)
                 for s in range(6)]
        spread[per] = (np.std([fit_kernel(n).transfer.mtf50 for n in reads]), {n.n_rois for n in reads})
    assert spread[24][1] == {96} and spread[None][1] == {TOTAL_ROIS}  # the budget, not every candidate
    assert spread[None][0] < 0.8 * spread[24][0]
    assert measure_nps(vol.hu, vol.spacing, regions, region="air", max_rois_per_slice=0) is None  # 0 means none


@pytest.mark.parametrize("kernel", KERNEL_CLASSES)
def test_kernel_class_from_noise_texture(kernel):
    sig = measure_signature(noisy(class_transfer(kernel), 20.0, seed=2))
    assert sig.kernel == kernel
    assert sig.sources["kernel"].source == "image" and sig.sources["transfer"].source == "image"


@pytest.mark.parametrize("name", list(CLASSIC))
def test_fit_recovers_classic_filters(name):
    fn = CLASSIC[name]
    nps = measure_nps(noisy(Curve(fn), 25.0, seed=3).hu, (1.0, PX, PX), region="air")
    fit = fit_kernel(nps)
    f = np.linspace(0.05, FN, 50)
    assert np.max(np.abs(fit.transfer(f) - fn(f))) < 0.12, name
    want = analytic_mtf50(fn)
    got = fit.transfer.mtf50
    if math.isfinite(want):
        assert got == pytest.approx(want, rel=0.1), name


def test_low_frequency_power_fbp_noise_lacks_does_not_make_a_smoothing_conversion_amplify():
    """A real CT used as a truth keeps its own scanner's smooth-kernel noise; under a sharp kernel's noise at
    full dose it holds the air's NPS below 0.2 c/mm. The fit read that as a cusped roll-off (p = 1, lung1 and
    lung2), whose ratio to a smooth target exceeded 1 at low frequency: the smoothing conversion amplified the
    anatomy's large contrasts. The fit's steepness is bounded at p = 2 (a blur's transfer is 1 - c f^2 at 0).
    A guard on what the bound buys (no low-frequency gain), not on the class: this mixture reads as standard."""
    from CTNormalizeLib.classical.mtf_ratio import mtf_ratio_transfer

    hu = body_phantom()
    sharp = shaped_noise(hu.shape, (1.0, PX, PX), class_transfer("very-sharp"), seed=21)
    own = shaped_noise(hu.shape, (1.0, PX, PX), Transfer(0.2, 2.0), seed=22)  # the truth's own, smoother noise
    nps = measure_nps(hu + np.float32(8.0) * sharp + np.float32(5.0) * own, (1.0, PX, PX), region="air")
    fit = fit_kernel(nps)
    assert fit.transfer.p >= 2.0
    f = np.linspace(0.0, 0.15, 16)
    assert np.max(mtf_ratio_transfer(fit.transfer, "smooth", lam=1e-3)(f)) <= 1.0 + 1e-6


def test_noise_texture_does_not_depend_on_noise_level():
    lo = measure_signature(noisy(class_transfer("sharp"), 6.0, seed=4))
    hi = measure_signature(noisy(class_transfer("sharp"), 60.0, seed=4))
    assert lo.transfer.mtf50 == pytest.approx(hi.transfer.mtf50, rel=0.03)
    assert hi.noise_hu / lo.noise_hu == pytest.approx(10.0, rel=0.05)


@pytest.mark.parametrize("kernel", KERNEL_CLASSES)
def test_kernel_from_a_narrow_rim_of_air_inside_the_field_of_view(kernel):
    # padded outside the reconstruction circle (-3024, as scanners write): only a thin rim of air
    # is left around the body, too narrow for 24 mm ROIs; half-size ROIs still read the kernel
    vol = noisy(class_transfer(kernel), 20.0, seed=11)
    y, x = np.mgrid[:256, :256] / 128.0 - 1.0
    hu = vol.hu.copy()
    hu[:, np.hypot(x, y) > 1.0] = -3024.0
    sig = measure_signature(Volume(hu, vol.spacing))
    assert sig.kernel == kernel and sig.details["nps"]["region"] == "air"
    assert sig.details["nps"]["roi_px"] < 24


def test_tags_disagreeing_with_pixels_warn_in_plain_words():
    vol = noisy(class_transfer("smooth"), 20.0, seed=5, meta={"ConvolutionKernel": "B70f"})
    tags = Protocol(kernel="very-sharp", kernel_name="B70f")
    sig = measure_signature(vol, tags=tags)
    codes = {w["code"]: w["message"] for w in sig.warnings}
    assert "KERNEL_TAG_DISAGREES" in codes
    assert "B70f" in codes["KERNEL_TAG_DISAGREES"] and "smooth" in codes["KERNEL_TAG_DISAGREES"]
    assert "--kernel-from labels" in codes["KERNEL_TAG_DISAGREES"]  # the way to use the stated kernel
    agree = measure_signature(noisy(class_transfer("very-sharp"), 20.0, seed=5), tags=tags)
    assert not [w for w in agree.warnings if w["code"] == "KERNEL_TAG_DISAGREES"]


def test_no_measurable_texture_falls_back_to_the_tag():
    hu = np.full((4, 64, 64), 40.0, np.float32)  # a field of view inside the body, no noise texture to fit
    sig = measure_signature(Volume(hu + np.random.default_rng(0).normal(0, 5, hu.shape).astype(np.float32),
                                   (1.0, 0.7, 0.7)), tags=Protocol(kernel="sharp", kernel_name="B60f"))
    assert sig.sources["transfer"].source == "tag" and sig.kernel == "sharp"


def _inside_the_body(transfer, sigma, seed, n=160) -> np.ndarray:
    """Soft tissue filling the field of view (a crop): no air outside the body."""
    return 40.0 + np.float32(sigma) * shaped_noise((6, n, n), (1.0, PX, PX), transfer, seed=seed)


def test_a_soft_tissue_stand_in_raised_by_texture_is_capped_by_the_air():
    """Without fat or muscle, any soft tissue stands in; its texture raised the reading 9x on a benchmark
    phantom (32.8 HU for a true 3.5, air 2.7), and the target texture then inserted 46 HU of noise. The body's
    noise cannot exceed twice the air's (every pixel is crossed by rays through the whole body): the reading is
    capped there and the warning says so. An untextured stand-in (the test above) keeps its reading."""
    from CTNormalizeLib.signature.measure import MIN_AIR_TO_TISSUE

    hu = body_phantom()
    hu[(hu > -200) & (hu < 100)] = 150.0
    texture = shaped_noise(hu.shape, (1.0, PX, PX), Transfer(0.15, 2.0), seed=8)
    inside = hu == 150.0
    hu[inside] += np.float32(25.0) * texture[inside]  # anatomy-like texture within -200..200 HU
    noise = shaped_noise(hu.shape, (1.0, PX, PX), class_transfer("standard"), seed=9)
    sig = measure_signature(Volume(hu + np.float32(4.0) * noise, (1.0, PX, PX)))
    air = sig.noise_by_region["air"]
    assert sig.noise_region == "soft" and sig.noise_by_region["soft"] > 2.5 * air  # the texture's doing
    assert sig.noise_hu == pytest.approx(air / MIN_AIR_TO_TISSUE)
    (w,) = [w for w in sig.warnings if w["code"] == "NOISE_FROM_SOFT_TISSUE"]
    assert "upper bound" in w["message"] and sig.air_to_tissue == MIN_AIR_TO_TISSUE


def test_kernel_in_soft_tissue_only_is_a_lower_bound():
    # without air the texture cannot tell a standard kernel from the anatomy's smoothness:
    # standard is assumed, with a warning that says what to do
    vol = Volume(_inside_the_body(class_transfer("standard"), 20.0, seed=7), (1.0, PX, PX))
    sig = measure_signature(vol)
    codes = {w["code"]: w["message"] for w in sig.warnings}
    assert "KERNEL_NOT_MEASURED" in codes and "--source kernel=" in codes["KERNEL_NOT_MEASURED"]
    assert sig.kernel == "standard" and sig.sources["transfer"].source == "default"
    assert sig.details["kernel_fit"]["lower_bound"] is True and sig.details["nps"]["region"] == "tissue"
    # a stated kernel wins over the soft-tissue texture, and is not called a disagreement
    tagged = measure_signature(vol, tags=Protocol(kernel="sharp", kernel_name="B60f"))
    assert tagged.kernel == "sharp" and tagged.sources["transfer"].source == "tag"
    assert not {w["code"] for w in tagged.warnings} & {"KERNEL_TAG_DISAGREES", "KERNEL_NOT_MEASURED"}
    given = measure_signature(vol, tags=Protocol(kernel="smooth", sources={"kernel": FieldSource("user", 1.0, "")}))
    assert given.kernel == "smooth" and given.sources["transfer"].source == "user"


def test_clipped_air_is_named_not_a_crop():
    # noisy air clipped at the display floor: no air ROI survives, and the warning says why
    vol = noisy(class_transfer("sharp"), 30.0, seed=12)
    sig = measure_signature(Volume(np.maximum(vol.hu, -1024.0), vol.spacing))
    msg = {w["code"]: w["message"] for w in sig.warnings}["KERNEL_NOT_MEASURED"]
    assert "clipped" in msg and "crop" not in msg


def test_a_poor_fit_in_air_is_not_called_unmeasured(monkeypatch):
    # the air was there, its texture just did not fit: one warning that says so, not "no uniform region"
    import CTNormalizeLib.signature.measure as M

    real = M.fit_kernel

    def poor(nps):
        fit = real(nps)
        fit.confidence = 0.05
        return fit

    monkeypatch.setattr(M, "fit_kernel", poor)
    codes = [w["code"] for w in measure_signature(noisy(class_transfer("sharp"), 20.0, seed=13)).warnings]
    assert "KERNEL_FIT_POOR" in codes and "KERNEL_NOT_MEASURED" not in codes


def test_a_sharp_texture_in_soft_tissue_is_still_used():
    # anatomy only makes a kernel look smoother: a texture sharper than standard even so is evidence
    sig = measure_signature(Volume(_inside_the_body(class_transfer("very-sharp"), 20.0, seed=8), (1.0, PX, PX)))
    assert sig.kernel == "very-sharp" and sig.sources["transfer"].source == "image"
    assert sig.sources["transfer"].confidence <= 0.3
    assert "KERNEL_FROM_TISSUE" in {w["code"] for w in sig.warnings}


def test_cut_lungs_touching_the_border_are_not_outside_air():
    # a crop through the chest: air above the body, dark lungs cut by both sides of the image
    from CTNormalizeLib.signature.regions import slice_regions

    full = body_phantom(256, 2)
    y, x = np.mgrid[:256, :256] / 128.0 - 1.0
    lungs = np.zeros((256, 256), bool)
    for cx in (-0.28, 0.28):
        lungs |= ((x - cx) / 0.18) ** 2 + (y / 0.28) ** 2 < 1
    full[:, lungs] = -990.0  # as dark as air (lung1's are), so the HU alone cannot tell
    cols = slice(128 - 45, 128 + 45)
    crop = full[:, :200, cols] + np.random.default_rng(9).normal(0, 10, (2, 200, 90)).astype(np.float32)
    r = slice_regions(crop, (1.0, PX, PX))[0]
    assert r.air_roi[:40].any(), "the air above the body is outside air"
    assert not (r.air_roi & lungs[:200, cols]).any(), "cut lungs were taken for air outside the body"
    # and its water-equivalent diameter is flagged as a lower bound; the whole phantom's is not
    whole = measure_signature(noisy(class_transfer("standard"), 10.0, seed=9))
    cut = measure_signature(Volume(crop, (1.0, PX, PX)))
    assert whole.details["size"]["truncated"] is False and cut.details["size"]["truncated"] is True


def test_structured_air_rois_are_judged_against_the_flattest():
    # a crop: a few true-air ROIs (noise only) among many in cut lung (vessels)
    from CTNormalizeLib.signature.nps import _flat_limit

    ranges = np.r_[np.full(8, 2.0), np.full(40, 25.0)]
    assert _flat_limit(ranges, "air") < 25.0
    noisy_air = np.full(40, 20.0)  # a very noisy scan (above the 12 HU floor) keeps all its air ROIs
    assert _flat_limit(noisy_air, "air") >= 20.0


def test_body_hull_matches_scikit_image():
    from skimage.morphology import convex_hull_image

    from CTNormalizeLib.signature.regions import _hull

    rng = np.random.default_rng(10)
    yy, xx = np.ogrid[:120, :150]
    for _ in range(5):
        m = np.zeros((120, 150), bool)
        for y, x, r in zip(rng.integers(15, 105, 3), rng.integers(15, 135, 3), rng.integers(4, 20, 3)):
            m |= (yy - y) ** 2 + (xx - x) ** 2 < r * r
        ours, ref = _hull(m), convex_hull_image(m)
        assert (ours | m).sum() == ours.sum()  # holds the mask
        assert (ours ^ ref).sum() <= 0.01 * ref.sum()


def test_classify_transfer_on_the_class_curves():
    for k in KERNEL_CLASSES:
        name, conf, dist = classify_transfer(class_transfer(k), 1.0)
        assert name == k and conf > 0.5 and dist[k] == 0.0


def test_z_thickness_from_overlapping_slices():
    from CTNormalizeLib.classical.thickness import change_thickness

    vol = noisy(class_transfer("standard"), 30.0, seed=6, nz=40)
    # a 3 mm Gaussian slice profile sampled every 1 mm
    thick = change_thickness(vol.hu, vol.spacing, 0.01, 3.0, 1.0).hu
    sig = measure_signature(Volume(thick, (1.0, PX, PX)))
    assert sig.thickness_mm == pytest.approx(3.0, rel=0.2)
    assert sig.sources["thickness_mm"].source == "image"


def test_water_equivalent_diameter():
    sig = measure_signature(noisy(class_transfer("standard"), 10.0, seed=7))
    hu = body_phantom()[0]
    body = hu > -500
    expected = 2 * math.sqrt(np.clip(hu[body] / 1000 + 1, 0, None).sum() * PX * PX / math.pi)
    assert sig.wed_mm == pytest.approx(expected, rel=0.03)


# ----------------------------------------------------------------------------- on the simulator

SIM_CASES = [(1000, (6, 192, 192), (0.5, 0.8, 0.8)),   # a small patient, 154 mm
             (1001, (6, 320, 320), (0.5, 1.0, 1.0))]   # a large one, 320 mm


@pytest.fixture(scope="module")
def simulated_scans():
    from CTNormalizeLib.simulate import make_phantom, project_truth, simulate_scan

    out = []
    for seed, shape, spacing in SIM_CASES:
        truth = make_phantom(seed, shape=shape, spacing=spacing).volume
        proj = project_truth(truth)
        for k in KERNEL_CLASSES:
            for dose in (0.1, 0.3, 1.0):
                scan = simulate_scan(truth, Protocol(kernel=k, dose=dose, thickness=1.0), seed=seed + 7,
                                     projections=proj)
                out.append((k, dose, seed, scan))
    return out


@pytest.mark.slow
def test_kernel_class_accuracy_on_simulated_scans(simulated_scans):
    """>= 95 % class accuracy over 10-100 % dose, every class, a small and a large patient (tags removed)."""
    hits = []
    for k, dose, seed, scan in simulated_scans:
        meta = {key: v for key, v in scan.meta.items() if key != "ConvolutionKernel"}
        sig = measure_signature(Volume(scan.hu, scan.spacing, meta=meta))
        hits.append(sig.kernel == k)
    assert np.mean(hits) >= 0.95, [(k, d, s) for (k, d, s, _), h in zip(simulated_scans, hits) if not h]


def test_a_stated_kernel_says_who_stated_it_on_every_path():
    """The kernel the user gives is the user's (confidence 1) on every path that uses it: it was reported as
    a tag (0.6) where the noise texture could not be read at all; the tag's own kernel stays a tag's."""
    from CTNormalizeLib.protocols import FieldSource, Protocol
    from CTNormalizeLib.signature import measure

    user = Protocol(kernel="sharp", sources={"kernel": FieldSource("user", 1.0, "kernel=sharp")})
    tag = Protocol(kernel="sharp", kernel_name="B60f", sources={"kernel": FieldSource("tag", 0.9, "B60f")})
    for kernel_from in ("pixels", "labels"):
        _, src, _ = measure._transfer(None, user, [], kernel_from=kernel_from)
        assert (src.source, src.confidence) == ("user", 1.0), (kernel_from, src)
        _, src, _ = measure._transfer(None, tag, [], kernel_from=kernel_from)
        assert src.source == "tag" and "ConvolutionKernel=B60f" in src.detail, (kernel_from, src)
    _, src, _ = measure._transfer(None, tag, [], no_air=measure.CLIPPED_REASON)
    assert "noise texture" in src.detail


def test_warm_structured_air_rois_are_not_air():
    """Outside air holds only noise, at the scan's air level; a crop's cut lung or a blanket at the border
    is warmer and has structure that survives smoothing. Both signs are needed: a scanner's air may read
    some HU off -1000, and a smooth kernel's noise survives smoothing in part."""
    from types import SimpleNamespace

    from scipy import ndimage as ndi

    from CTNormalizeLib.signature.nps import _without_warm_structure

    rng = np.random.default_rng(11)
    n = 40
    anatomy = ndi.gaussian_filter(rng.normal(0.0, 1.0, (8, 64, 64)), (0, 4.0, 4.0))
    anatomy = (anatomy / anatomy.std() * 15.0).astype(np.float32)

    def scan(levels, textures):
        hu = np.stack([lv + tx + rng.normal(0.0, 10.0, (64, 64)) for lv, tx in zip(levels, textures)])
        hu = hu.astype(np.float32)
        regions = [SimpleNamespace(z=k, smooth=ndi.uniform_filter(hu[k], 17, mode="nearest")) for k in range(len(hu))]
        kept = _without_warm_structure(hu, [(r, [(8, 8)]) for r in regions], n)
        return [bool(corners) for _, corners in kept]

    flat = [0.0] * 4
    lung = [anatomy[k] for k in range(4)]
    # calibrated air with cut lung at -985: the lung goes, cold structure (a blanket at air level) stays
    assert scan([-1000.0] * 4 + [-985.0, -985.0, -1000.0], flat + lung[:3]) == [True] * 4 + [False, False, True]
    # a scanner whose air reads -985 keeps all its air, also the structured ROIs at its air level
    assert scan([-985.0] * 6, flat + lung[:2]) == [True] * 6
    # no noise-like ROI to tell the air level: calibrated air (-1000) is the reference
    assert scan([-985.0, -1000.0], lung[:2]) == [False, True]


def test_a_crop_whose_air_is_mostly_cut_lung_reads_the_noise_of_the_whole_scan(pyradiomics_data):
    """lung2 cropped to 350 px: 22 of its 24 mm "air" ROIs were cut lung or blanket (-990 to -977 HU, with
    structure) and read a kernel far too smooth (MTF50 0.11 c/mm, whole scan 0.32) and 57 % too much noise."""
    from CTNormalizeLib import read_volume

    vol = read_volume(pyradiomics_data / "lung2_image.nrrd")
    whole = measure_signature(vol)
    y0, x0 = (vol.shape[1] - 350) // 2, (vol.shape[2] - 350) // 2
    crop = measure_signature(Volume(vol.hu[:, y0:y0 + 350, x0:x0 + 350].copy(), vol.spacing))
    assert crop.noise_hu == pytest.approx(whole.noise_hu, rel=0.15)
    assert crop.transfer.mtf50 > 0.6 * whole.transfer.mtf50 and crop.kernel == whole.kernel


def test_air_read_off_calibration_is_still_air(pyradiomics_data, monkeypatch):
    """lung1 with every value 12 HU warmer (air at -988, within a scanner's tolerance): the cut-lung rule
    keeps its air ROIs (an absolute -990 HU cut dropped a third of them), so the kernel and noise read as
    they do without the rule."""
    from CTNormalizeLib import read_volume
    from CTNormalizeLib.signature import nps

    vol = read_volume(pyradiomics_data / "lung1_image.nrrd")
    warm = Volume(vol.hu + 12.0, vol.spacing)
    with_rule = measure_signature(warm)
    monkeypatch.setattr(nps, "_without_warm_structure", lambda hu, picked, n: picked)
    without = measure_signature(warm)
    assert with_rule.details["nps"]["n_rois"] >= 0.95 * without.details["nps"]["n_rois"]
    assert with_rule.transfer.mtf50 == pytest.approx(without.transfer.mtf50, rel=0.03)
    assert with_rule.noise_hu == pytest.approx(without.noise_hu, rel=0.03)


def test_pixels_too_coarse_to_tell_kernels_apart_say_so(pyradiomics_data):
    """lung1 (B31f tag) binned 4 x 4 to 2.3 mm pixels reads smooth from its pixels, and a conversion from
    that reading sharpens (the emphysema index rose from 2 to 10 %): the signature says why. Binned 2 x 2
    (1.2 mm, Nyquist above a smooth kernel's MTF50) it does not."""
    from CTNormalizeLib import read_volume

    vol = read_volume(pyradiomics_data / "lung1_image.nrrd")
    hu = vol.hu[20:28]

    def binned(k):
        z, y, x = hu.shape
        b = hu[:, : y // k * k, : x // k * k].reshape(z, y // k, k, x // k, k).mean(axis=(2, 4))
        return Volume(b.astype(np.float32), (vol.spacing[0], vol.spacing[1] * k, vol.spacing[2] * k))

    tags = Protocol(kernel="standard", kernel_name="B31f")
    coarse = measure_signature(binned(4), tags=tags)
    (w,) = [w for w in coarse.warnings if w["code"] == "KERNEL_PIXELS_COARSE"]
    assert "B31f" in w["message"] and "--source kernel=" in w["message"] and "--kernel-from labels" in w["message"]
    assert not [w for w in measure_signature(binned(2), tags=tags).warnings if w["code"] == "KERNEL_PIXELS_COARSE"]


def _z_correlated_noise(shape, how: str, seed: int = 0) -> np.ndarray:
    """White noise correlated along z: by a Gaussian slice profile (an overlap) or slice to slice (AR(1))."""
    from scipy.ndimage import gaussian_filter1d

    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 10.0, shape).astype(np.float32)
    if how.startswith("box"):  # rectangular slices n slices thick: rho_k = 1 - k / n (3: 0.67, 0.33)
        from scipy.ndimage import uniform_filter1d

        return uniform_filter1d(w, int(how[3:]), axis=0, mode="nearest")
    if how == "overlap":  # FWHM 2 slices -> sigma 2 / 2.3548: rho_1 = exp(-1 / (4 sigma^2)) = 0.707, rho_2 = rho_1^4
        return gaussian_filter1d(w, 2.0 / 2.3548, axis=0, mode="nearest", truncate=6.0)
    a = 0.45  # persistent along z: rho_k = a^k (0.45, 0.20), which no slice profile gives
    out = w.copy()
    for z in range(1, shape[0]):
        out[z] = a * out[z - 1] + math.sqrt(1.0 - a * a) * w[z]
    return out


def test_a_slowly_falling_z_correlation_is_not_read_as_thick_slices():
    """A 5 mm lung2 crop read 6.4 mm: its neighbouring slices' noise correlated 0.43 (streaks and structures that
    persist along z). Slices two apart tell it from an overlap: an overlap's correlation falls to about rho^4 there,
    this one only to rho^2. The old reading (from neighbours alone) took 0.45 as 1.32 x the spacing."""
    from CTNormalizeLib.signature.zres import z_resolution

    masks = {z: np.ones((64, 64), bool) for z in range(15)}
    overlap = z_resolution(_z_correlated_noise((16, 64, 64), "overlap"), (1.0, 1.0, 1.0), masks)
    assert overlap.thickness_mm == pytest.approx(2.0, rel=0.08) and overlap.rho == pytest.approx(0.707, abs=0.03)
    persistent = z_resolution(_z_correlated_noise((16, 64, 64), "ar1"), (1.0, 1.0, 1.0), masks)
    assert persistent.rho == pytest.approx(0.45, abs=0.03)
    assert persistent.thickness_mm is None and "persist along z" in persistent.detail
    for n in (3, 4):  # rectangular slices overlapping 3 and 4 times: their correlation falls linearly, not as rho^4
        box = z_resolution(_z_correlated_noise((16, 64, 64), f"box{n}"), (1.0, 1.0, 1.0), masks)
        assert box.rho == pytest.approx(1 - 1 / n, abs=0.04) and box.thickness_mm is not None, (n, box.detail)
