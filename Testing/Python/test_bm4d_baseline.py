"""BM4D baseline: the PSD convention, the pluggable NPS, and the providers (skipped without bm4d)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from CTNormalizeLib.benchmark_methods import bm4d_methods
from CTNormalizeLib.evaluate import bm4d_baseline
from CTNormalizeLib.evaluate.nps import nps_2d
from CTNormalizeLib.protocols import parse_spec
from CTNormalizeLib.volume import Volume

HIGH_PASS = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], float)


def _noise(rng, shape, sigma=10.0):
    return np.stack([ndi.convolve(rng.normal(0, sigma, shape[1:]), HIGH_PASS, mode="wrap") for _ in range(shape[0])])


def test_psd_of_white_noise_is_variance_times_size():
    sigma, d = 7.0, 0.8
    nps_white = np.full((16, 16), sigma**2 * d * d)  # IEC NPS of white noise
    psd = bm4d_baseline.bm4d_psd(nps_white, (d, d), (3, 20, 24), (2.0, d, d))
    assert psd.shape == (20, 24, 3)  # BM4D axis order (y, x, z)
    np.testing.assert_allclose(psd, sigma**2 * 3 * 20 * 24, rtol=1e-5)


def test_psd_matches_the_fft_power_of_correlated_noise():
    rng = np.random.default_rng(0)
    n2, _, _ = nps_2d(_noise(rng, (300, 32, 32)), (1.0, 1.0), order=0)
    psd = bm4d_baseline.bm4d_psd(n2, (1.0, 1.0), (4, 64, 64), (1.0, 1.0, 1.0))
    emp = np.mean([np.abs(np.fft.fftn(np.transpose(_noise(rng, (4, 64, 64)), (1, 2, 0)))) ** 2
                   for _ in range(40)], axis=0)
    assert np.median(psd / emp) == pytest.approx(1.0, rel=0.05)
    # high-pass noise: more power at high frequency, and the PSD says so
    assert psd[32, 32, 0] > 5 * psd[1, 1, 0]


def test_uniform_roi_nps_measures_the_noise_variance():
    rng = np.random.default_rng(1)
    hu = np.full((4, 96, 96), -1000.0)
    hu[:, 8:88, 8:88] = 40.0
    hu = hu + rng.normal(0, 12.0, hu.shape)
    n2, sp = bm4d_baseline.uniform_roi_nps(hu, (2.0, 0.7, 0.7))
    var = n2.sum() / (n2.size * sp[0] * sp[1])
    assert np.sqrt(var) == pytest.approx(12.0, rel=0.1)


bm4d_needed = pytest.mark.skipif(not bm4d_baseline.available(), reason="bm4d (optional, non-commercial) not installed")


@bm4d_needed
def test_bm4d_with_the_psd_removes_correlated_noise():
    rng = np.random.default_rng(2)
    clean = np.zeros((4, 48, 48), np.float32)
    clean[:, 12:36, 12:36] = 100
    clean = ndi.gaussian_filter(clean, (0, 1.5, 1.5))
    noisy = clean + _noise(rng, clean.shape).astype(np.float32)
    n2, _, _ = nps_2d(_noise(rng, (200, 24, 24)), (1.0, 1.0), order=0)
    calls = []

    def nps_fn(hu, spacing):
        calls.append(hu.shape)
        return n2, (1.0, 1.0)

    out = bm4d_baseline.bm4d_denoise(Volume(noisy, (1.0, 1.0, 1.0)), nps_fn=nps_fn)
    assert calls == [noisy.shape]  # the PSD came from the plugged-in estimator
    assert np.abs(out.hu - clean).mean() < 0.2 * np.abs(noisy - clean).mean()
    assert out.shape == noisy.shape and out.spacing == (1.0, 1.0, 1.0)


def _disc(rng, n=96, sigma=40.0):
    y, x = np.mgrid[:n, :n]
    hu = np.where(np.hypot(y - n / 2, x - n / 2) < n / 2 - 8, 40.0, -1000.0)
    return np.stack([hu + rng.normal(0, sigma, hu.shape) for _ in range(3)]).astype(np.float32)


@bm4d_needed
def test_providers_bm4d_and_the_mtf_ratio_chain(monkeypatch):
    provs = {p.name: p for p in bm4d_methods()}
    assert set(provs) == {"bm4d", "bm4d+mtf_ratio"}
    rng = np.random.default_rng(3)
    src = Volume(_disc(rng), (2.0, 0.7, 0.7))
    den = Volume(_disc(rng, sigma=5.0), (2.0, 0.7, 0.7))  # stands in for BM4D's output
    monkeypatch.setattr(bm4d_baseline, "bm4d_denoise", lambda volume, nps_fn=None: den)
    assert provs["bm4d"].fn(src, None, None) is den
    same = provs["bm4d+mtf_ratio"].fn(src, parse_spec("kernel=standard,dose=0.1"), parse_spec("kernel=standard,dose=1"))
    np.testing.assert_allclose(same.hu, den.hu, atol=1e-3)  # no kernel change: BM4D only
    out = provs["bm4d+mtf_ratio"].fn(src, parse_spec("kernel=sharp,dose=0.25"), parse_spec("kernel=smooth,dose=1"))
    inside = slice(None), slice(40, 56), slice(40, 56)
    assert out.hu[inside].std() < 0.8 * den.hu[inside].std()  # the MTF ratio smoothed BM4D's output
