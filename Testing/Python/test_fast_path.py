"""The fast inference pipelines: the CPU path gives exactly the old outputs; the device-resident
(torch) path runs under ``torch.device("cpu")`` and stays within stated tolerances of it."""

import sys
from pathlib import Path

import numpy as np
import pytest

from CTNormalizeLib.protocols import parse_spec
from CTNormalizeLib.volume import Volume

sys.path.insert(0, str(Path(__file__).parent))
from engine_reference import run_reference  # noqa: E402

SRC = parse_spec("kernel=sharp,dose=0.25,thickness=2")
TGT = parse_spec("kernel=smooth,dose=1,thickness=1")
COVERS = {"source": {"kernel": ["smooth", "standard", "sharp", "very-sharp"], "dose": [0.1, 1.0],
                     "thickness": [1.0, 5.0]},
          "targets": [{"kernel": "smooth", "dose": 1.0, "thickness": [1.0, 5.0]}]}


def _package(tmp_path_factory, name, params, io_extra=None, covers=None):
    import torch

    from CTNormalizeLib.models import build_model
    from CTNormalizeLib.models.registry import read_package
    from CTNormalizeLib.train.package import write_package

    torch.manual_seed(1)
    arch = {"name": "conditioned2.5d", "params": params}
    m = build_model(arch)
    with torch.no_grad():
        for p in m.parameters():  # untrained but not the identity
            p.add_(0.05 * torch.randn_like(p))
    io = {"hu_window": [-1100, 900], "scale": {"offset": 0, "divisor": 1000}, "context": params["context"],
          "z_up_factor": None, **(io_extra or {})}
    d = tmp_path_factory.mktemp("models") / name
    write_package(m, d, {"name": name, "architecture": arch, "covers": covers or COVERS, "priority": 1, "io": io})
    return read_package(d)


@pytest.fixture(scope="module")
def protocol_pkg(tmp_path_factory):
    return _package(tmp_path_factory, "toy-protocol", {"context": 5, "width": 16, "head": 8, "blocks": 2},
                    {"frontend": "mtf_ratio"})


@pytest.fixture(scope="module")
def signature_pkg(tmp_path_factory):
    from CTNormalizeLib.models.conditioning import SIGNATURE_FEATURES

    covers = {"conditioning": "signature", "source": {}, "targets": {}}
    return _package(tmp_path_factory, "toy-signature",
                    {"context": 5, "width": 16, "head": 8, "blocks": 2, "cond_dim": SIGNATURE_FEATURES},
                    {"frontend": "mtf_ratio_measured", "frontend_lambda": 0.04, "conditioning": "signature"},
                    covers)


def chest(nz=12, n=96, z_spacing=2.0, seed=0):
    """A noisy chest-like volume: body, two lungs, a spine, a table strip, air."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) / n
    body = ((y - 0.5) / 0.36) ** 2 + ((x - 0.5) / 0.45) ** 2 < 1
    lungs = (((y - 0.47) / 0.22) ** 2 + ((np.abs(x - 0.5) - 0.18) / 0.12) ** 2) < 1
    spine = ((y - 0.78) / 0.06) ** 2 + ((x - 0.5) / 0.06) ** 2 < 1
    base = np.where(body, 40.0, -1000.0).astype(np.float32)
    base[lungs] = -860.0
    base[spine] = 1200.0  # beyond the window: passes through
    base[int(0.92 * n):int(0.95 * n), int(0.1 * n):int(0.9 * n)] = 100.0  # the table: not the body
    hu = np.stack([base + rng.normal(0, 30, base.shape).astype(np.float32) * (base > -950) for _ in range(nz)])
    hu[:, :, :] += np.linspace(-5, 5, nz, dtype=np.float32)[:, None, None]
    return Volume(hu.astype(np.float32), spacing=(z_spacing, 0.7, 0.7))


CASES = {
    "z_change": dict(z=2.0, src=SRC, tile=None),
    "same_grid": dict(z=1.0, src=parse_spec("kernel=sharp,dose=0.25,thickness=1"), tile=None),
    "tiled": dict(z=2.0, src=SRC, tile=64),
    "thin_to_thick": dict(z=1.0, src=parse_spec("kernel=sharp,dose=0.25,thickness=1"), tile=None,
                          tgt=parse_spec("kernel=smooth,dose=1,thickness=2")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cpu_path_identical_to_the_old_pipeline(protocol_pkg, case):
    from CTNormalizeLib.inference import run_model

    c = CASES[case]
    vol = chest(z_spacing=c["z"])
    tgt = c.get("tgt", TGT)
    ref, ref_qc = run_reference(protocol_pkg, vol, c["src"], tgt, tile=c["tile"])
    res = run_model(protocol_pkg, vol, c["src"], tgt, device="cpu", tile=c["tile"])
    assert res.volume.shape == ref.shape
    np.testing.assert_array_equal(res.volume.hu, ref)
    for k, v in ref_qc.items():
        assert res.qc[k] == v, k


def test_cpu_path_identical_for_a_signature_model(signature_pkg):
    from CTNormalizeLib.inference import run_model
    from CTNormalizeLib.plan import make_plan

    vol = chest(nz=10, n=128, z_spacing=2.0)
    plan = make_plan(vol, "kernel=sharp,dose=0.25,thickness=2", "emphysema-reference", method="mtf_ratio")
    ref, ref_qc = run_reference(signature_pkg, vol, plan.source, plan.target, plan=plan)
    res = run_model(signature_pkg, vol, plan.source, plan.target, device="cpu", plan=plan)
    np.testing.assert_array_equal(res.volume.hu, ref)
    assert res.qc["hu_drift"] == ref_qc["hu_drift"]
