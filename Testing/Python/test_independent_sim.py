"""The independent (evaluation-only) simulator: MTF, noise, slice profile, API, emphysema, cache."""

from __future__ import annotations

import numpy as np
import pytest

from CTNormalizeLib.errors import BadInputError
from CTNormalizeLib.evaluate.independent_sim import anatomy, cases, physics, scanner
from CTNormalizeLib.evaluate.independent_sim.physics import HeldOutPhysics
from CTNormalizeLib.protocols.kernels import KERNEL_CLASSES, mtf50
from CTNormalizeLib.volume import Volume


def _radial_power(a, d, n_bins=12):
    n = a.shape[0]
    p = np.abs(np.fft.fft2(a)) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(n, d), np.fft.fftfreq(n, d), indexing="ij"))
    edges = np.linspace(0, 0.5 / d, n_bins + 1)
    idx = np.digitize(f.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < n_bins)
    s = np.bincount(idx[ok], p.ravel()[ok], n_bins) / np.maximum(np.bincount(idx[ok], minlength=n_bins), 1)
    return (edges[:-1] + edges[1:]) / 2, s


@pytest.mark.parametrize("filt", ["ramp", "hann"])
def test_analytic_mtf_matches_a_noise_free_scan(filt):
    # transfer of a white-texture disc through radon -> iradon, against the analytic MTF
    n, d = 96, 0.7
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:n, :n]
    disc = np.hypot(y - n / 2 + 0.5, x - n / 2 + 0.5) < n / 2 - 6
    hu = np.where(disc, rng.normal(0, 200, (n, n)), 0).astype(np.float32)
    p = HeldOutPhysics(filter=filt, thickness_mm=1.0, n_views=160)
    out = scanner.simulate(Volume(hu[None], (1.0, d, d)), p, None, noise=False).hu[0]
    f, ps = _radial_power(np.where(disc, out, 0), d)
    _, pt = _radial_power(np.where(disc, hu, 0), d)
    meas = np.sqrt(ps / pt)
    ana = physics.filter_mtf(filt, f, d)
    low = f < 0.6 * 0.5 / d  # above that, resampling aliasing adds power the analytic MTF does not count
    assert np.max(np.abs(meas[low] - ana[low])) < 0.04
    m50 = np.interp(0.5, meas[::-1], f[::-1])
    assert abs(m50 / physics.filter_mtf50(filt, d) - 1) < 0.06


def test_the_noise_is_shaped_by_the_noise_transfer_not_the_signal_mtf():
    """Noise enters after the forward projection: its texture shows the window and the backprojection's
    interpolation, not the rotation blur inside radon that the signal also gets (why a transfer read from
    the noise reads this simulator's ramp scans sharper than their signal MTF)."""
    n, d = 96, 0.7
    y, x = np.mgrid[:n, :n]
    disc = np.hypot(y - n / 2 + 0.5, x - n / 2 + 0.5) < n / 2 - 4
    hu = np.where(disc, 0.0, -1000.0).astype(np.float32)
    p = HeldOutPhysics(filter="ramp", thickness_mm=1.0, n_views=160, dose=0.5)
    clean = scanner.simulate(Volume(hu[None], (1.0, d, d)), p, None, noise=False).hu[0]
    c, h = n // 2, 24  # a central square inside the water disc
    nps = 0
    for seed in range(6):
        diff = scanner.simulate(Volume(hu[None], (1.0, d, d)), p, seed).hu[0] - clean
        f, ps = _radial_power(diff[c - h:c + h, c - h:c + h] - diff[c - h:c + h, c - h:c + h].mean(), d)
        nps = nps + ps
    band = (f > 0.15 / d) & (f < 0.42 / d)  # away from DC and from the aliasing at Nyquist
    shape = np.sqrt(nps[band] / f[band])
    shape = shape / shape[0]
    for_noise = physics.noise_transfer("ramp", f[band], d) / physics.noise_transfer("ramp", f[band][:1], d)
    for_signal = physics.filter_mtf("ramp", f[band], d) / physics.filter_mtf("ramp", f[band][:1], d)
    assert np.abs(np.log(shape / for_noise)).mean() < 0.5 * np.abs(np.log(shape / for_signal)).mean()
    assert physics.filter_mtf50("ramp", d, transfer=physics.noise_transfer) > 1.2 * physics.filter_mtf50("ramp", d)


def test_filter_mtf50_orders_the_filters_and_scales_with_pixel_size():
    m = [physics.filter_mtf50(f, 0.6) for f in physics.FILTERS]
    assert m == sorted(m, reverse=True)  # ramp sharpest, hann smoothest
    assert physics.filter_mtf50("ramp", 0.5) == pytest.approx(physics.filter_mtf50("ramp", 1.0) * 2, rel=1e-3)


def test_kernel_class_boundaries_hold_the_engine_classes():
    for k in KERNEL_CLASSES:
        cls, margin = physics.kernel_class_for_mtf50(mtf50(k))
        assert cls == k and margin > 0.1
    b = physics.class_boundaries()
    assert b["smooth"][1] == pytest.approx(np.sqrt(mtf50("smooth") * mtf50("standard")))
    assert physics.kernel_class_for_mtf50(b["standard"][1] * 1.01)[0] == "sharp"


def test_physics_is_validated_and_frozen():
    with pytest.raises(BadInputError, match="filter"):
        HeldOutPhysics(filter="B30f")
    with pytest.raises(BadInputError, match="profile"):
        HeldOutPhysics(slice_profile="gauss")
    p = HeldOutPhysics()
    with pytest.raises(Exception):
        p.dose = 0.5
    assert HeldOutPhysics(filter="ramp", dose=0.25, thickness_mm=5).nominal_spec() == "kernel=sharp,dose=0.25,thickness=5"
    # a user who knows the scanner's slices names a rectangle; a helical triangle is the engine's default
    assert HeldOutPhysics(filter="ramp", dose=0.25, thickness_mm=5).nominal_spec(name_profile=True) == \
        "kernel=sharp,dose=0.25,thickness=5,profile=rect"
    assert HeldOutPhysics(filter="ramp", thickness_mm=5, slice_profile="triangle").nominal_spec(name_profile=True) == \
        "kernel=sharp,dose=1,thickness=5"


def test_slice_weights_rect_and_triangle():
    np.testing.assert_allclose(scanner.slice_weights(4, 5.0, 5.0, "rect"), np.eye(4), atol=1e-12)
    w = scanner.slice_weights(5, 5.0, 5.0, "triangle")
    np.testing.assert_allclose(w[2, 1:4], [1 / 8, 3 / 4, 1 / 8])
    w = scanner.slice_weights(20, 0.5, 2.0, "rect")
    assert w.shape == (5, 20) and np.allclose(w.sum(1), 1)
    np.testing.assert_allclose(w[2, 6:11], [0.125, 0.25, 0.25, 0.25, 0.125])
    with pytest.raises(BadInputError, match="thinner"):
        scanner.slice_weights(10, 1.0, 0.5, "rect")


def _water(n=112, d=2.6, radius_mm=130.0, nz=2):
    y, x = np.mgrid[:n, :n]
    r = np.hypot(y - n / 2 + 0.5, x - n / 2 + 0.5) * d
    hu = np.where(r < radius_mm, 0.0, -1000.0).astype(np.float32)
    return Volume(np.repeat(hu[None], nz, 0), (1.0, d, d))


def _centre_std(v, half=12):
    c = v.hu.shape[1] // 2
    return float(v.hu[:, c - half:c + half, c - half:c + half].std())


def test_noise_follows_dose_without_aec_and_is_seeded():
    # few photons, so the noise dominates the (noise-free) reconstruction ripple at these coarse pixels
    ph = lambda **kw: HeldOutPhysics(filter="hann", thickness_mm=1.0, n_views=150, photons_full=5e3, **kw)  # noqa: E731
    truth = _water()
    proj = scanner.project(truth, ph())
    full = scanner.scan(proj, ph(), 1)
    quarter = scanner.scan(proj, ph(dose=0.25), 1)
    assert _centre_std(quarter) / _centre_std(full) == pytest.approx(2.0, rel=0.2)
    np.testing.assert_array_equal(full.hu, scanner.scan(proj, ph(), 1).hu)
    assert not np.array_equal(full.hu, scanner.scan(proj, ph(), 2).hu)
    clean = scanner.scan(proj, ph(), None, noise=False)
    assert _centre_std(clean) < 0.2 * _centre_std(full)
    assert abs(float(clean.hu[:, 50:62, 50:62].mean())) < 15  # water reads ~0 HU
    # no AEC: the same tube current through a larger patient is noisier
    big = scanner.simulate(_water(radius_mm=145.0), ph(), 1)
    assert _centre_std(big) > 1.15 * _centre_std(full)


def test_bowtie_lowers_the_flux_off_centre():
    i0 = scanner.incident_photons(301, 2.0, HeldOutPhysics())  # +-300 mm, beyond the 240 mm bowtie
    assert i0[150] == i0.max() and i0[0] == pytest.approx(i0[150] * HeldOutPhysics().bowtie_edge)


def test_simulate_set_roles_and_grid():
    t = anatomy.Truth(_water(n=64, d=4.0, radius_mm=110.0, nz=6), None)
    p = lambda f, dose: HeldOutPhysics(filter=f, dose=dose, thickness_mm=2.0, n_views=90)  # noqa: E731
    out = scanner.simulate_set(t.volume, p("ramp", 0.25), p("hann", 1.0), seed=5)
    assert {"source", "target", "replicate", "target_noise_free", "truth"} <= set(out)
    shapes = {k: out[k].shape for k in ("source", "target", "replicate", "target_noise_free", "truth")}
    assert len(set(shapes.values())) == 1 and out["source"].shape == (3, 64, 64)
    assert out["source"].spacing == (2.0, 4.0, 4.0) and out["source"].origin == t.volume.origin
    assert not np.array_equal(out["target"].hu, out["replicate"].hu)
    assert "ConvolutionKernel" not in out["source"].meta  # tagless, as far as the kernel goes
    # a thin source and a thick target of one patient: each on its own slices, slice 0 of both on the truth's first
    thin = HeldOutPhysics(filter="ramp", dose=1.0, thickness_mm=2.0, n_views=90)
    thick = HeldOutPhysics(filter="hann", dose=1.0, thickness_mm=6.0, slice_profile="triangle", n_views=90)
    t12 = anatomy.Truth(_water(n=64, d=4.0, radius_mm=110.0, nz=13), None)
    fractions = []
    mixed = scanner.simulate_set(t12.volume, thin, thick, seed=5, progress=lambda stage, f: fractions.append(f))
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)  # progress never runs backwards
    assert mixed["source"].shape == (7, 64, 64) and mixed["source"].spacing == (2.0, 4.0, 4.0)
    for role in ("target", "replicate", "target_noise_free", "truth"):
        assert mixed[role].shape == (3, 64, 64) and mixed[role].spacing == (6.0, 4.0, 4.0)
        assert mixed[role].origin == mixed["source"].origin == t12.volume.origin
    assert mixed["projections"].thickness_mm == 6.0
    # the source is the thin protocol's scan, not the thick one resampled
    alone = scanner.simulate(t12.volume, thin, None, noise=False)
    nf = scanner.simulate_set(t12.volume, thin, thick, seed=5)["source"]
    assert abs(float(np.mean(nf.hu - alone.hu))) < 5.0 and nf.shape == alone.shape


def test_emphysema_insertion_stays_in_lung_parenchyma():
    hu = np.full((6, 80, 80), 0.0, np.float32)
    lung = np.zeros(hu.shape, bool)
    lung[:, 10:70, 10:40] = True
    hu[lung] = -860.0
    hu[:, 30:32, 20:22] = 40.0  # a vessel inside the lung
    t = anatomy.Truth(Volume(hu, (5.0, 1.0, 1.0)), lung)
    out = anatomy.insert_emphysema(t, 0.05, seed=3)
    info = out.info["emphysema_inserted"]
    assert info["fraction"] == pytest.approx(0.05, abs=0.02)
    assert 1.0 <= info["diameter_mm_median"] <= info["diameter_mm_max"] <= 30.0
    changed = out.volume.hu != hu
    assert not changed[~lung].any() and not changed[:, 30:32, 20:22].any()
    assert out.volume.hu.min() >= -1000.0
    assert out.emphysema.any() and np.all(out.volume.hu[out.emphysema] < -900)
    again = anatomy.insert_emphysema(t, 0.05, seed=3)
    np.testing.assert_array_equal(out.volume.hu, again.volume.hu)


def test_scale_patient_zooms_about_the_centre():
    t = anatomy.Truth(_water(n=64, d=4.0, radius_mm=80.0), None)
    big = anatomy.scale_patient(t, 1.25)
    r = lambda v: (v.hu[0] > -500).sum()  # noqa: E731
    assert r(big.volume) == pytest.approx(r(t.volume) * 1.25**2, rel=0.08)


def test_tiny_case_is_cached_and_complete(tmp_path, monkeypatch):
    monkeypatch.setenv("CTNORMALIZE_CACHE", str(tmp_path))
    spec = cases.benchmark_cases("tiny")[0]
    a = cases.generate_case(spec)
    assert list(tmp_path.joinpath("heldout").glob("phantom1000-tiny-*.npz"))
    b = cases.generate_case(spec)
    for role in ("source", "target", "replicate", "target_noise_free", "truth"):
        np.testing.assert_array_equal(getattr(a, role).hu, getattr(b, role).hu)
        assert getattr(a, role).spacing == getattr(b, role).spacing
    assert a.lung.shape == a.target.shape and a.lung.any() and a.emphysema is not None and a.emphysema.any()
    assert a.source_spec == "kernel=sharp,dose=0.25,thickness=2" and a.target_spec == "kernel=smooth,dose=1,thickness=2"
    assert a.info["source_kernel_class"] in KERNEL_CLASSES and a.info["source_mtf50"] > a.info["target_mtf50"]


def test_case_definitions_mirror_issue_11():
    specs = cases.issue11_cases(256)
    assert [s.source.filter for s in specs] == ["ramp", "ramp", "cosine"]
    assert [s.source.dose for s in specs] == [0.25, 0.25, 0.1]
    assert specs[1].anatomy.emphysema > 0 and specs[0].anatomy.emphysema == 0
    assert all(s.anatomy.kind == "lung2" for s in specs)
    assert len({s.key() for s in specs}) == 3
    with pytest.raises(BadInputError, match="seeds >= 1000"):
        anatomy.phantom_truth(7)


def test_classification_cases_label_scans_by_mtf50(tmp_path, monkeypatch):
    monkeypatch.setenv("CTNORMALIZE_CACHE", str(tmp_path))
    tiny = {"tiny": cases.AnatomySpec("phantom", 64, seed=1003, pixel_mm=0.5, n_slices=8)}
    scans = cases.classification_cases(filters=("ramp", "hann"), doses=(0.1, 1.0), patients=tiny)
    assert [s.name for s in scans] == ["tiny-ramp-0.1", "tiny-ramp-1", "tiny-hann-0.1", "tiny-hann-1"]
    by = {s.name: s for s in scans}
    assert by["tiny-ramp-1"].mtf50 == pytest.approx(physics.filter_mtf50("ramp", 0.5))
    assert by["tiny-ramp-1"].kernel_class == "sharp" and by["tiny-hann-1"].kernel_class == "standard"
    assert by["tiny-ramp-0.1"].volume.hu.std() != by["tiny-ramp-1"].volume.hu.std()
    again = cases.classification_cases(filters=("ramp",), doses=(0.1,), patients=tiny)
    np.testing.assert_array_equal(again[0].volume.hu, by["tiny-ramp-0.1"].volume.hu)


@pytest.mark.slow
def test_the_classification_set_spans_three_kernel_classes():
    scans = cases.classification_cases(doses=(1.0,))  # every dose shares these projections; one keeps CI short
    assert len(scans) == len(physics.FILTERS) * 2
    assert {s.kernel_class for s in scans} == {"smooth", "standard", "sharp"}
    assert {s.patient for s in scans} == {"small", "large"}
    assert all(s.volume.shape[0] >= 3 and s.nominal_spec.startswith("kernel=") for s in scans)
