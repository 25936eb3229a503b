"""Classical normalization on the physics simulator's phantom (projection, Poisson noise, FBP)."""

import numpy as np
import pytest

from CTNormalizeLib.classical import change_thickness, convert_kernel
from CTNormalizeLib.normalization import normalize
from CTNormalizeLib.protocols import Protocol, parse_spec

SHAPE, SPACING = (48, 128, 128), (0.5, 0.8, 0.8)
NOISE_FREE = 1e4  # dose high enough that quantum noise is negligible


@pytest.fixture(scope="module")
def truth():
    from CTNormalizeLib.simulate import make_phantom

    return make_phantom(7, shape=SHAPE, spacing=SPACING).volume  # a training seed (< 1000)


def _l1(a, b):
    n = min(len(a), len(b))
    return float(np.mean(np.abs(a[:n] - b[:n])))


def test_kernel_conversion_matches_simulated_target(truth):
    from CTNormalizeLib.simulate import simulate_scan

    sharp = simulate_scan(truth, Protocol(kernel="sharp", dose=NOISE_FREE, thickness=1.0), seed=1)
    smooth = simulate_scan(truth, Protocol(kernel="smooth", dose=NOISE_FREE, thickness=1.0), seed=1)
    conv = convert_kernel(sharp.hu, sharp.spacing, "sharp", "smooth")
    assert _l1(conv, smooth.hu) < 0.05 * _l1(sharp.hu, smooth.hu)


def test_thin_to_thick_matches_simulated_thick_scan(truth):
    from CTNormalizeLib.simulate import simulate_scan

    thin = simulate_scan(truth, Protocol(kernel="standard", dose=NOISE_FREE, thickness=1.0), seed=1)
    thick = simulate_scan(truth, Protocol(kernel="standard", dose=NOISE_FREE, thickness=3.0), seed=1)
    r = change_thickness(thin.hu, thin.spacing, 1.0, 3.0)
    assert r.hu.shape == thick.hu.shape and not r.warnings
    naive = thin.hu[::3]
    assert _l1(r.hu, thick.hu) < 0.15 * _l1(naive, thick.hu)


def test_auto_closes_gap_on_simulated_pair(truth):
    from CTNormalizeLib.simulate import simulate_pair

    S = parse_spec("kernel=sharp,dose=0.25,thickness=2")
    T = parse_spec("kernel=smooth,dose=1,thickness=1")
    src, tgt, rep = simulate_pair(truth, S, T, seed=7)
    res = normalize(src, S, T, method="classical", texture="target")
    out = res.volume
    assert out.spacing == tgt.spacing and out.origin == tgt.origin
    base = change_thickness(src.hu, src.spacing, 2.0, 2.0, 1.0).hu  # source on the target grid
    l_src, l_out, l_rep = _l1(base, tgt.hu), _l1(out.hu, tgt.hu), _l1(rep.hu, tgt.hu)
    gap = (l_src - l_out) / (l_src - l_rep)
    assert gap > 0.6, (l_src, l_out, l_rep)
