"""The torch scanner (for pairs made on a GPU on the fly) against the finufft reference: projections,
FBP, noise std and NPS mean frequency, MTF50 within 10 % (the issue's tolerance), on the CPU."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from CTNormalizeLib.protocols import kernel_mtf  # noqa: E402
from CTNormalizeLib.simulate import DEFAULT_SCANNER, make_phantom, project_truth, projector  # noqa: E402
from CTNormalizeLib.simulate import torch_scanner as ts  # noqa: E402
from CTNormalizeLib.simulate.scanner import _noisy_rows  # noqa: E402
from CTNormalizeLib.volume import Volume  # noqa: E402

N, PX = 128, 0.8


def _window(kernel):
    return lambda f: kernel_mtf(kernel, np.abs(f))


def _ref_fbp(sino, g, kernel):
    return projector.fbp(sino, g, _window(kernel)(projector.fbp_frequencies(g)).astype(np.float32))


def _hu(mu):
    return (mu / DEFAULT_SCANNER.mu_water - 1.0) * 1000.0


def test_projections_and_fbp_match_the_reference():
    hu = make_phantom(3, shape=(2, N, N), spacing=(1.0, PX, PX)).volume.hu.astype(np.float32)
    mu = np.clip(DEFAULT_SCANNER.mu_water * (1 + hu / 1000), 0, None)
    g = projector.ParallelGeometry(N, N, PX, PX)
    tg = ts.TorchGeometry(g)
    ref = projector.forward_project(mu, g)
    got = ts.forward_project(mu, tg).numpy()
    assert got.shape == ref.shape
    assert np.sqrt(np.mean((got - ref) ** 2)) < 0.01 * np.sqrt(np.mean(ref ** 2))
    r_ref = _hu(_ref_fbp(ref, g, "sharp"))
    r_got = _hu(ts.fbp(torch.from_numpy(ref), tg, _window("sharp")).numpy())
    inside = np.hypot(*np.meshgrid(np.arange(N) - N // 2, np.arange(N) - N // 2, indexing="ij")) < N // 2 - 4
    assert np.abs(r_got - r_ref)[:, inside].mean() < 2.0  # HU


def _cylinder(nz=8):
    yy, xx = np.meshgrid((np.arange(N) - N // 2) * PX, (np.arange(N) - N // 2) * PX, indexing="ij")
    hu = np.where(np.hypot(yy, xx) < 45.0, 0.0, -1000.0).astype(np.float32)
    return np.repeat(hu[None], nz, axis=0)


def _noise_figures(noise):
    """Noise std and NPS mean frequency (cycles/pixel) in the cylinder's centre."""
    c = noise[:, N // 2 - 24:N // 2 + 24, N // 2 - 24:N // 2 + 24]
    c = c - c.mean(axis=(1, 2), keepdims=True)
    nps = (np.abs(np.fft.fft2(c)) ** 2).mean(0)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(48), np.fft.fftfreq(48), indexing="ij"))
    return float(c.std()), float((f * nps).sum() / nps.sum())


@pytest.mark.parametrize("kernel", ["standard", "sharp"])
def test_noise_std_and_nps_match_the_reference_within_10_percent(kernel):
    hu = _cylinder()
    truth = Volume(hu, (1.0, PX, PX))
    proj = project_truth(truth)
    g = proj.geometry
    dose = 0.3
    ref_noisy = _ref_fbp(_noisy_rows(proj, np.arange(len(hu)), dose, seed=5), g, kernel)
    ref_noise = _hu(ref_noisy) - _hu(_ref_fbp(proj.sino, g, kernel))
    tg = ts.TorchGeometry(g)
    sino = ts.forward_project(np.clip(DEFAULT_SCANNER.mu_water * (1 + hu / 1000), 0, None), tg)
    gen = torch.Generator().manual_seed(5)
    noisy = ts.noisy_log(sino, ts.row_counts(hu, tg, dose, 1.0), gen)
    got_noise = _hu(ts.fbp(noisy, tg, _window(kernel)).numpy()) - _hu(ts.fbp(sino, tg, _window(kernel)).numpy())
    (s_ref, f_ref), (s_got, f_got) = _noise_figures(ref_noise), _noise_figures(got_noise)
    assert s_got == pytest.approx(s_ref, rel=0.10)
    assert f_got == pytest.approx(f_ref, rel=0.10)


def _mtf50(recon, truth):
    """The frequency (cycles/pixel) where the radial transfer recon/truth first falls below 0.5."""
    R, T = np.fft.fft2(recon), np.fft.fft2(truth)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(N), np.fft.fftfreq(N), indexing="ij"))
    bins = np.minimum((f / 0.5 * 32).astype(int), 40)
    num = np.bincount(bins.ravel(), (R * np.conj(T)).real.sum(0).ravel(), minlength=41)
    den = np.bincount(bins.ravel(), (np.abs(T) ** 2).sum(0).ravel(), minlength=41)
    mtf = num[:32] / den[:32]
    mtf = mtf / mtf[0]
    k = int(np.argmax(mtf < 0.5))
    return (k - 1 + (mtf[k - 1] - 0.5) / (mtf[k - 1] - mtf[k])) / 64.0 + 0.5 / 64.0


@pytest.mark.parametrize("kernel", ["smooth", "standard"])
def test_mtf50_matches_the_reference_within_10_percent(kernel):
    rng = np.random.default_rng(0)
    hu = _cylinder(4) + np.where(_cylinder(4) > -500, rng.normal(0, 100, (4, N, N)), 0).astype(np.float32)
    mu = np.clip(DEFAULT_SCANNER.mu_water * (1 + hu / 1000), 0, None)
    g = projector.ParallelGeometry(N, N, PX, PX)
    ref = _ref_fbp(projector.forward_project(mu, g), g, kernel)
    tg = ts.TorchGeometry(g)
    got = ts.fbp(ts.forward_project(mu, tg), tg, _window(kernel)).numpy()
    m_ref, m_got = _mtf50(ref - ref.mean(), mu - mu.mean()), _mtf50(got - got.mean(), mu - mu.mean())
    assert 0.05 < m_ref < 0.5
    assert m_got == pytest.approx(m_ref, rel=0.10)


def test_simulate_slices_gives_hu_with_the_noise_of_its_dose():
    hu = _cylinder(4)
    lo = ts.simulate_slices(hu, (PX, PX), dose=0.1, transfer=_window("standard"), seed=1).numpy()
    hi = ts.simulate_slices(hu, (PX, PX), dose=1.0, transfer=_window("standard"), seed=1).numpy()
    clean = ts.simulate_slices(hu, (PX, PX), dose=1.0, transfer=_window("standard"), noise=False).numpy()
    centre = (slice(None), slice(N // 2 - 20, N // 2 + 20), slice(N // 2 - 20, N // 2 + 20))
    assert abs(float(clean[centre].mean())) < 5.0  # water reads 0 HU
    assert (lo - clean)[centre].std() == pytest.approx(np.sqrt(10) * (hi - clean)[centre].std(), rel=0.15)
