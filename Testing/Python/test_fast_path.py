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
    write_package(m, d, {"name": name, "architecture": arch, "covers": covers or COVERS, "priority": 1, "io": io,
                         "training_data": {"kind": "untrained toy weights for pipeline tests"}})
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


@pytest.mark.parametrize("params", [{"context": 5, "width": 16, "head": 8, "blocks": 2},
                                    {"context": 5, "width": 24, "head": 12, "blocks": 3, "cond_dim": 16}])
def test_inplace_inference_forward_is_bit_identical(params):
    import torch

    from CTNormalizeLib.models import build_model
    from CTNormalizeLib.models.conditioning import PAIR_FEATURES

    torch.manual_seed(3)
    m = build_model({"name": "conditioned2.5d", "params": params}).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    m = m.to(memory_format=torch.channels_last)
    x = (0.3 * torch.randn(3, params["context"], 40, 56)).contiguous(memory_format=torch.channels_last)
    c = torch.randn(1, params.get("cond_dim", PAIR_FEATURES)).expand(3, -1)
    x_before = x.clone()
    with torch.enable_grad():
        ref = m(x, c).detach()  # the autograd path: out-of-place element-wise steps
    with torch.inference_mode():
        fast = m(x, c)
    assert torch.equal(ref, fast)
    assert torch.equal(x, x_before)  # the input is never overwritten


# -- the device-resident pipeline, run on torch.device("cpu") ----------------------------------

@pytest.mark.parametrize("case", list(CASES))
def test_resident_pipeline_matches_the_cpu_path_in_fp32(protocol_pkg, case):
    from CTNormalizeLib.inference import run_model

    c = CASES[case]
    vol = chest(z_spacing=c["z"])
    tgt = c.get("tgt", TGT)
    a = run_model(protocol_pkg, vol, c["src"], tgt, device="cpu", tile=c["tile"])
    b = run_model(protocol_pkg, vol, c["src"], tgt, device="cpu", tile=c["tile"], pipeline="resident",
                  precision="fp32")
    assert b.volume.shape == a.volume.shape and b.volume.spacing == a.volume.spacing
    # scipy filters accumulate in float64, torch in float32: agreement to float32 rounding
    np.testing.assert_allclose(b.volume.hu, a.volume.hu, rtol=0, atol=0.01)
    for region, d in a.qc["hu_drift"].items():
        assert b.qc["hu_drift"][region] == pytest.approx(d, abs=0.01)
    assert b.qc["changed_fraction"] == pytest.approx(a.qc["changed_fraction"], abs=1e-3)
    assert (b.qc["seam_ratio"] is None) == (a.qc["seam_ratio"] is None)
    if a.qc["seam_ratio"] is not None:
        assert b.qc["seam_ratio"] == pytest.approx(a.qc["seam_ratio"], rel=1e-3)


def test_resident_pipeline_for_a_signature_model(signature_pkg):
    from CTNormalizeLib.inference import run_model
    from CTNormalizeLib.plan import make_plan

    vol = chest(nz=10, n=128, z_spacing=2.0)
    plan = make_plan(vol, "kernel=sharp,dose=0.25,thickness=2", "emphysema-reference", method="mtf_ratio")
    a = run_model(signature_pkg, vol, plan.source, plan.target, device="cpu", plan=plan)
    b = run_model(signature_pkg, vol, plan.source, plan.target, device="cpu", plan=plan, pipeline="resident",
                  precision="fp32")
    np.testing.assert_allclose(b.volume.hu, a.volume.hu, rtol=0, atol=0.01)


def test_reduced_precision_of_the_shipped_model_within_tolerance():
    """bf16 / fp16 (what CUDA runs) emulated on the CPU against fp32, shipped default model, chest-like input."""
    from CTNormalizeLib.inference import run_model
    from CTNormalizeLib.models.registry import list_models

    pkg = next(p for p in list_models() if p.name == "ctn-conditioned-v2")
    vol = chest(nz=8, n=160, z_spacing=1.0)
    src = parse_spec("kernel=sharp,dose=0.25,thickness=1")
    ref = run_model(pkg, vol, src, TGT, device="cpu").volume.hu
    # measured here: bf16 max 3.8 HU, mean 0.31 HU; fp16 max 0.51 HU, mean 0.037 HU (the model changes 37 HU on average)
    for precision, max_hu, mean_hu in (("bf16", 6.0, 0.5), ("fp16", 1.0, 0.08)):
        out = run_model(pkg, vol, src, TGT, device="cpu", pipeline="resident", precision=precision).volume.hu
        d = np.abs(out - ref)
        assert d.max() < max_hu and d.mean() < mean_hu, (precision, d.max(), d.mean())


def test_resident_oom_retries_smaller_then_gives_up_for_the_cpu(protocol_pkg, monkeypatch):
    import torch

    from CTNormalizeLib.inference import resident
    from CTNormalizeLib.inference.runspec import make_runspec, on_grid

    vol = chest(nz=6, n=96)
    src, tgt = on_grid(SRC, TGT, vol)
    spec = make_runspec(protocol_pkg.card, src, tgt)
    module = protocol_pkg.load()
    ok = resident.run_resident(module, vol.hu, vol.spacing, spec, "cpu", precision="fp32")
    calls = []
    real = resident.network

    def flaky(run_mod, xb, cond, roi_hw, overlap):  # out of memory above 2 slices
        calls.append(int(xb.shape[0]))
        if xb.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(run_mod, xb, cond, roi_hw, overlap)

    monkeypatch.setattr(resident, "network", flaky)
    warnings = []
    res = resident.run_resident(module, vol.hu, vol.spacing, spec, "cpu", chunk=8, precision="fp32",
                                warnings=warnings)
    assert calls[:3] == [8, 4, 2] and [w["code"] for w in warnings].count("OOM_RETRY") == 2
    np.testing.assert_allclose(res.hu, ok.hu, atol=1e-3)

    monkeypatch.setattr(resident, "network", lambda *a: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("oom")))
    monkeypatch.setattr(resident, "oom_policy_name", lambda dev: "cuda:0")
    with pytest.raises(resident.DeviceOOM):
        resident.run_resident(module, vol.hu, vol.spacing, spec, "cpu", chunk=1, tile=64, precision="fp32")


def test_resident_input_untouched(protocol_pkg):
    from CTNormalizeLib.inference import run_model

    vol = chest(nz=6, n=64)
    before = vol.hu.copy()
    run_model(protocol_pkg, vol, SRC, TGT, device="cpu", pipeline="resident")
    np.testing.assert_array_equal(vol.hu, before)


# -- torch operations against their numpy/scipy definitions -----------------------------------

@pytest.mark.parametrize("mode", ["reflect", "nearest", "mirror"])
def test_padded_index_matches_scipy_modes(mode):
    from CTNormalizeLib.inference.torch_ops import padded_index

    a = np.arange(7.0)
    np_mode = {"reflect": "symmetric", "nearest": "edge", "mirror": "reflect"}[mode]
    np.testing.assert_array_equal(a[padded_index(7, 5, mode)], np.pad(a, 5, mode=np_mode))


def test_torch_filters_match_scipy():
    import torch
    from scipy import ndimage as ndi

    from CTNormalizeLib.inference import masks, torch_ops, zgrid

    rng = np.random.default_rng(0)
    x = rng.normal(0, 300, (9, 40, 52)).astype(np.float32)
    t = torch.from_numpy(x)
    for s in (1.0, 1.5, 3.0):
        np.testing.assert_allclose(torch_ops.gaussian_inplane(t, s).numpy(), ndi.gaussian_filter(x, (0, s, s)),
                                   atol=2e-3)
    np.testing.assert_allclose(torch_ops.gaussian_z(t, 0.8).numpy(),
                               ndi.gaussian_filter1d(x, 0.8, axis=0, mode="nearest"), atol=2e-3)
    for args in ((2.0, 1.0, 2.0, 1.0), (1.0, 2.0, 1.0, 2.0), (1.0, 0.7, 1.0, 1.0), (1.25, 1.25, 1.0, 3.0)):
        np.testing.assert_allclose(torch_ops.resample_z(t, *args).numpy(), zgrid.resample_z(x, *args), atol=2e-3)
    body = x > 0
    np.testing.assert_allclose(torch_ops.soft_mask(torch.from_numpy(body)).numpy(), masks.soft_mask(body), atol=1e-6)
    np.testing.assert_allclose(torch_ops.window_weight(t, -1100, 900).numpy(), masks.window_weight(x, -1100, 900),
                               atol=1e-6)
    for n in (201, 200):
        assert torch_ops.median(t.flatten()[:n]) == pytest.approx(float(np.median(x.flatten()[:n])), abs=1e-4)


def test_torch_frontend_matches_the_cpu_front_end():
    import torch

    from CTNormalizeLib.classical.mtf_ratio import convert_kernel
    from CTNormalizeLib.inference import torch_ops

    x = chest(nz=3, n=90).hu
    ref = convert_kernel(x, (1.0, 0.7, 0.7), "sharp", "smooth", lam=0.04)
    out = torch_ops.frontend_filter(torch.from_numpy(x), (0.7, 0.7), "sharp", "smooth", 0.04).numpy()
    np.testing.assert_allclose(out, ref, atol=0.02)


def test_reduced_precision_overflow_reruns_in_fp32(protocol_pkg, monkeypatch):
    import torch

    from CTNormalizeLib.inference import resident
    from CTNormalizeLib.inference.runspec import make_runspec, on_grid

    vol = chest(nz=4, n=64)
    src, tgt = on_grid(SRC, TGT, vol)
    spec = make_runspec(protocol_pkg.card, src, tgt)
    module = protocol_pkg.load()
    ref = resident.run_resident(module, vol.hu, vol.spacing, spec, "cpu", precision="fp32")
    real = resident.network

    def overflowing(run_mod, xb, cond, roi_hw, overlap):
        y = real(run_mod, xb, cond, roi_hw, overlap)
        return y * float("inf") if torch.is_autocast_enabled("cpu") else y

    monkeypatch.setattr(resident, "network", overflowing)
    warnings = []
    res = resident.run_resident(module, vol.hu, vol.spacing, spec, "cpu", precision="fp16", warnings=warnings)
    assert "REDUCED_PRECISION_OVERFLOW" in [w["code"] for w in warnings]
    np.testing.assert_allclose(res.hu, ref.hu, atol=1e-3)


def test_threaded_body_mask_is_the_shared_one():
    from CTNormalizeLib.imaging import body_mask
    from CTNormalizeLib.inference import masks

    vol = chest(nz=7, n=90).hu
    vol[3, 2:10, 2:10] = 300.0  # an island outside the body: not the largest component
    ref = body_mask(vol, threshold=-500.0, sigma=1.0, step=2)
    np.testing.assert_array_equal(masks.body_mask(vol), ref)
    assert not ref[3, 3:9, 3:9].any()


def test_auto_precision_on_cuda_is_bf16_which_the_signature_model_runs_without_overflow():
    """fp16 overflowed in every chunk of ctn-conditioned-v3 on an H200 (each chunk re-run in fp32); bf16 did not."""
    import torch

    from CTNormalizeLib.inference import run_model, tiling
    from CTNormalizeLib.inference.methods import effective_protocols
    from CTNormalizeLib.models.registry import list_models
    from CTNormalizeLib.plan import make_plan

    import warnings

    with warnings.catch_warnings():  # without CUDA torch disables the autocast (a warning); its type is still the choice
        warnings.simplefilter("ignore", UserWarning)
        assert tiling.autocast_context("cuda", "auto").fast_dtype == torch.bfloat16
        assert tiling.autocast_context("cuda", "fp16").fast_dtype == torch.float16
    pkg = next(p for p in list_models() if p.name == "ctn-conditioned-v3")
    vol = chest(nz=8, n=160, z_spacing=1.0)
    plan = make_plan(vol, "kernel=sharp,dose=0.25,thickness=1", "kernel=smooth,dose=1,thickness=1",
                     method="mtf_ratio", device="cpu")
    src, tgt = effective_protocols(plan)
    codes = {p: [w["code"] for w in run_model(pkg, vol, src, tgt, device="cpu", plan=plan, pipeline="resident",
                                              precision=p).warnings] for p in ("fp16", "bf16")}
    assert "REDUCED_PRECISION_OVERFLOW" in codes["fp16"]  # what the H200 run showed, emulated
    assert "REDUCED_PRECISION_OVERFLOW" not in codes["bf16"]
