"""Physics of the protocol simulator: projector, noise vs dose, kernel sharpness, replicates, slice profile."""

import numpy as np
import pytest

from CTNormalizeLib.errors import BadInputError, CancelledError
from CTNormalizeLib.protocols import Protocol, kernel_mtf, mtf50, parse_spec
from CTNormalizeLib.simulate import project_truth, simulate_pair, simulate_scan
from CTNormalizeLib.simulate.projector import ParallelGeometry, fbp, forward_project
from CTNormalizeLib.simulate.slice_profile import output_positions, ssp_weights
from CTNormalizeLib.volume import Volume

PIX = 0.8
N = 112
R_CYL = 38.0  # mm


def _radius(n=N, pix=PIX):
    yy, xx = (np.mgrid[:n, :n] - n // 2) * pix
    return np.hypot(yy, xx)


def water_cylinder(rows=16, dz=0.5, value=0.0) -> Volume:
    sl = np.where(_radius() < R_CYL, value, -1000.0).astype(np.float32)
    return Volume(np.repeat(sl[None], rows, 0), spacing=(dz, PIX, PIX))


@pytest.fixture(scope="module")
def cylinder():
    truth = water_cylinder()
    return truth, project_truth(truth)


def roi_std(vol: Volume, radius=18.0) -> float:
    roi = _radius() < radius
    return float(np.sqrt(np.mean(np.var(vol.hu[:, roi], axis=1))))


def test_projector_line_integrals_and_fbp_are_exact_on_a_disk():
    g = ParallelGeometry(N, N, PIX, PIX)
    r = _radius()
    mu = np.where(r < R_CYL, 0.02, 0.0).astype(np.float32)[None]
    sino = forward_project(mu, g)
    # Central ray of every view crosses the full diameter.
    centre = sino[0, :, g.n_det // 2]
    assert np.allclose(centre, 2 * R_CYL * 0.02, rtol=0.03)
    # Total attenuation is the same in every view (mass conservation).
    mass = sino[0].sum(axis=1) * g.dt
    assert np.allclose(mass, mu.sum() * PIX * PIX, rtol=1e-3)
    rec = fbp(sino, g)[0]
    inner = r < R_CYL - 6
    assert abs(rec[inner].mean() / 0.02 - 1) < 0.005
    # With a kernel window, ringing and view-aliasing stay below 5 HU away from the edge,
    # out to the image corners.
    from CTNormalizeLib.simulate.projector import fbp_frequencies

    rec = fbp(sino, g, kernel_mtf("standard", fbp_frequencies(g)))[0]
    assert np.abs(rec[r > R_CYL + 8]).max() < 0.02 * 0.005


def test_noise_falls_as_one_over_sqrt_dose(cylinder):
    truth, proj = cylinder
    full = simulate_scan(truth, parse_spec("kernel=standard,dose=1,thickness=1"), 1, projections=proj)
    quarter = simulate_scan(truth, parse_spec("kernel=standard,dose=0.25,thickness=1"), 1, projections=proj)
    ratio = roi_std(quarter) / roi_std(full)
    assert ratio == pytest.approx(2.0, rel=0.15)
    # Calibration: a full-dose standard 1 mm scan has 10-15 HU noise in water (AEC reference patient).
    assert 8.0 < roi_std(full) < 16.0
    # The mean stays at water.
    assert abs(float(np.mean(full.hu[:, _radius() < 18]))) < 2.0


def test_thicker_slices_are_less_noisy(cylinder):
    truth = water_cylinder(rows=40)
    proj = project_truth(truth)
    thin = simulate_scan(truth, parse_spec("kernel=standard,dose=1,thickness=1"), 3, projections=proj)
    thick = simulate_scan(truth, parse_spec("kernel=standard,dose=1,thickness=4"), 3, projections=proj)
    keep = slice(1, -1)
    ratio = roi_std(Volume(thick.hu[keep])) / roi_std(Volume(thin.hu[keep]))
    assert ratio == pytest.approx(0.5, rel=0.2)


def _esf_width_and_mtf50(vol: Volume):
    """10-90 % edge width (mm) and MTF50 (cycles/mm) from the radially binned cylinder edge."""
    r = _radius()
    sel = np.abs(r - R_CYL) < 8
    rr = np.broadcast_to(r, vol.hu.shape)[:, sel].ravel()
    vv = vol.hu[:, sel].ravel()
    bins = np.arange(R_CYL - 8, R_CYL + 8, 0.1)
    idx = np.digitize(rr, bins)
    esf = np.array([vv[idx == i].mean() for i in range(1, len(bins))])
    centres = 0.5 * (bins[1:] + bins[:-1])
    esf = (esf - esf[-10:].mean()) / (esf[:10].mean() - esf[-10:].mean())  # 1 inside, 0 outside
    # 10-90 % width, from the monotone envelope crossing points.
    x10 = centres[np.flatnonzero(esf > 0.1)[-1]]
    x90 = centres[np.flatnonzero(esf > 0.9)[-1]]
    lsf = -np.gradient(esf, centres)
    lsf = lsf * np.hanning(len(lsf))
    f = np.fft.rfftfreq(4096, d=0.1)
    mtf = np.abs(np.fft.rfft(lsf, 4096))
    mtf /= mtf[0]
    return x10 - x90, float(f[np.argmax(mtf < 0.5)])


def test_sharper_kernel_gives_more_noise_and_sharper_edges(cylinder):
    truth, proj = cylinder
    results = {}
    for k in ("smooth", "standard", "sharp"):
        noisy = simulate_scan(truth, Protocol(kernel=k, dose=1.0, thickness=1.0), 5, projections=proj)
        clean = simulate_scan(truth, Protocol(kernel=k, dose=400.0, thickness=1.0), 5, projections=proj)
        width, m50 = _esf_width_and_mtf50(clean)
        results[k] = (roi_std(noisy), width, m50)
    n = [results[k][0] for k in ("smooth", "standard", "sharp")]
    w = [results[k][1] for k in ("smooth", "standard", "sharp")]
    assert n[0] < n[1] < n[2]
    assert w[0] > w[1] > w[2]
    # The measured MTF50 follows the kernel class's MTF (within the pixel's Nyquist).
    for k in ("smooth", "standard"):
        assert results[k][2] == pytest.approx(mtf50(k), rel=0.15), (k, results[k][2], mtf50(k))


def test_replicate_differs_only_by_noise():
    from CTNormalizeLib.simulate import make_phantom

    ph = make_phantom(5, shape=(24, 96, 96), spacing=(0.5, 0.9, 0.9), emphysema=0.0, nodules=0)
    truth = ph.volume
    prot = parse_spec("kernel=standard,dose=0.5,thickness=1")
    proj = project_truth(truth)
    a = simulate_scan(truth, prot, 10, projections=proj)
    b = simulate_scan(truth, prot, 11, projections=proj)
    body = ph.masks["body"][::2][: a.hu.shape[0]]
    d = (a.hu - b.hu)[body]
    assert abs(d.mean()) < 0.05 * d.std()
    # A second protocol with a different seed also differs in blur, not only noise.
    c = simulate_scan(truth, parse_spec("kernel=sharp,dose=0.5,thickness=1"), 12, projections=proj)
    truth_s = truth.hu[::2][: a.hu.shape[0]][body]
    corr_rep = abs(np.corrcoef(d, truth_s - truth_s.mean())[0, 1])
    # No structure: the replicate difference is uncorrelated with anatomy and with the
    # noise-free image's edges.
    from scipy import ndimage

    edges = ndimage.gaussian_gradient_magnitude(truth.hu[::2][: a.hu.shape[0]], 1.0)[body]
    assert corr_rep < 0.05
    assert abs(np.corrcoef(np.abs(d), edges)[0, 1]) < 0.15
    # Same seed, same everything: identical.
    a2 = simulate_scan(truth, prot, 10, projections=proj)
    assert np.array_equal(a.hu, a2.hu)
    assert not np.array_equal(a.hu, c.hu)


def test_replicate_noise_is_sqrt2_of_single(cylinder):
    truth, proj = cylinder
    prot = parse_spec("kernel=standard,dose=1,thickness=1")
    a = simulate_scan(truth, prot, 21, projections=proj)
    b = simulate_scan(truth, prot, 22, projections=proj)
    single = roi_std(a)
    diff = roi_std(Volume(a.hu - b.hu))
    assert diff / single == pytest.approx(np.sqrt(2), rel=0.1)


def test_thicker_profile_lowers_z_resolution():
    # A 0.5 mm thin disc of +1000 HU in water; output sampled every 0.5 mm.
    rows = 41
    truth = water_cylinder(rows=rows)
    truth.hu[rows // 2][_radius() < R_CYL] = 1000.0
    proj = project_truth(truth)
    fwhm = {}
    for t in (1.0, 3.0):
        scan = simulate_scan(truth, Protocol(kernel="standard", dose=400.0, thickness=t, spacing=0.5), 1,
                             projections=proj)
        prof = scan.hu[:, _radius() < 10].mean(axis=1)
        prof = prof - np.median(prof)
        z = np.arange(len(prof)) * 0.5
        above = z[prof > prof.max() / 2]
        fwhm[t] = above.max() - above.min() + 0.5
        # The disc's integral is preserved (the profile is normalised).
        assert prof.sum() * 0.5 == pytest.approx(1000.0 * 0.5, rel=0.1)
    assert fwhm[1.0] == pytest.approx(1.0, abs=0.5)
    assert fwhm[3.0] == pytest.approx(3.0, abs=0.75)
    assert fwhm[3.0] > 2 * fwhm[1.0]


def test_z_grid_and_meta():
    truth = water_cylinder(rows=21)
    truth.origin = (1.0, 2.0, 3.0)
    scan = simulate_scan(truth, parse_spec("kernel=B70f,dose=0.5,thickness=2,spacing=1.5"), 0)
    assert scan.hu.shape == (7, N, N)  # 10 mm extent / 1.5 mm -> 7 slices from the first
    assert scan.spacing == (1.5, PIX, PIX)
    assert scan.origin == truth.origin
    assert scan.meta["ConvolutionKernel"] == "B70f"
    assert scan.meta["SliceThickness"] == "2"
    assert scan.meta["Modality"] == "CT"
    sim = scan.meta["simulation"]
    assert sim["kernel"] == "very-sharp" and sim["dose"] == 0.5 and sim["seed"] == 0
    assert "simulator_version" in sim
    assert np.allclose(output_positions(21, 0.5, 1.5), np.arange(7) * 1.5)


def test_slice_profile_weights():
    pos = np.array([0.0, 5.0, 10.0])
    w = ssp_weights(41, 0.5, 0.5, 2.0, pos)
    assert np.allclose(w.sum(axis=1), 1)
    # Centred, symmetric where not cut, FWHM ~ thickness.
    z = np.arange(41) * 0.5
    assert np.sum(w[1] * z) == pytest.approx(5.0)
    half = z[w[1] >= w[1].max() / 2]
    assert 1.4 <= half.max() - half.min() + 0.5 <= 2.6
    # No extra blur when the thickness equals the native one: nearest row.
    w0 = ssp_weights(41, 0.5, 0.5, 0.5, pos)
    assert np.allclose(w0.max(axis=1), 1)


def test_thinner_than_input_is_refused_or_clamped():
    truth = Volume(np.full((4, 32, 32), -1000.0, np.float32), spacing=(5.0, 1.0, 1.0), meta={"SliceThickness": "5"})
    truth.hu[:, 8:24, 8:24] = 0
    with pytest.raises(BadInputError, match="5 mm"):
        simulate_scan(truth, parse_spec("kernel=smooth,dose=1,thickness=1"), 0)
    scan = simulate_scan(truth, parse_spec("kernel=smooth,dose=1,thickness=1"), 0, on_thin="clamp")
    assert scan.meta["SliceThickness"] == "5"
    assert scan.hu.shape == (4, 32, 32)


def test_progress_and_cancellation():
    truth = water_cylinder(rows=8)
    seen = []
    simulate_scan(truth, parse_spec("kernel=standard,dose=1,thickness=1"), 0,
                  progress=lambda s, f: seen.append((s, f)))
    stages = [s for s, _ in seen]
    assert {"project", "noise", "reconstruct"} <= set(stages)
    fr = [f for _, f in seen]
    assert fr == sorted(fr) and fr[-1] == pytest.approx(1.0)

    def cancel(stage, fraction):
        raise CancelledError("stop")

    with pytest.raises(CancelledError):
        simulate_scan(truth, parse_spec("kernel=standard"), 0, progress=cancel)


def test_simulate_pair_shapes_and_independent_noise():
    truth = water_cylinder(rows=12)
    src, tgt, rep = simulate_pair(truth, parse_spec("kernel=sharp,dose=0.25,thickness=2"),
                                  parse_spec("kernel=smooth,dose=1,thickness=1"), 7)
    assert src.hu.shape[0] == 3 and tgt.hu.shape[0] == 6 and rep.hu.shape == tgt.hu.shape
    assert not np.array_equal(tgt.hu, rep.hu)
    assert roi_std(src) > 2 * roi_std(tgt)
    assert tgt.meta["simulation"]["seed"] != rep.meta["simulation"]["seed"]


def test_kernel_window_is_the_protocol_mtf():
    # The simulator uses protocols.kernel_mtf: a sharper class passes more at 0.5 cycles/mm.
    f = np.array([0.5])
    assert kernel_mtf("sharp", f)[0] > kernel_mtf("standard", f)[0] > kernel_mtf("smooth", f)[0]


def test_real_ct_lung1_thick_slices(lung1_path):
    from CTNormalizeLib.io import read_volume

    vol = read_volume(lung1_path)
    assert vol.spacing[0] == pytest.approx(5.0)
    nz = vol.shape[0] // 2
    crop = Volume(vol.hu[nz - 2:nz + 2, 128:384, 128:384], spacing=vol.spacing, origin=vol.origin,
                  direction=vol.direction, meta=dict(vol.meta))
    with pytest.raises(BadInputError, match="thin"):
        simulate_scan(crop, parse_spec("kernel=smooth,dose=1,thickness=1"), 0)
    proj = project_truth(crop)
    sharp = simulate_scan(crop, parse_spec("kernel=sharp,dose=0.25,thickness=5"), 0, projections=proj)
    smooth = simulate_scan(crop, parse_spec("kernel=smooth,dose=1,thickness=5"), 0, projections=proj)
    assert sharp.hu.shape == crop.hu.shape and sharp.spacing == crop.spacing
    # Same anatomy (mean HU in the lungs kept), more high-frequency content in the sharp scan.
    lungs = (crop.hu > -950) & (crop.hu < -700)
    assert abs(sharp.hu[lungs].mean() - crop.hu[lungs].mean()) < 15
    assert abs(smooth.hu[lungs].mean() - crop.hu[lungs].mean()) < 15
    hf = lambda a: np.abs(np.diff(a, axis=2)).mean()  # noqa: E731
    assert hf(sharp.hu) > 1.5 * hf(smooth.hu)
    assert smooth.meta["simulation"]["native_thickness_mm"] == pytest.approx(5.0)
