"""Tiled inference: no seams, OOM fallback, determinism, body/HU pass-through, z grid, registry safety."""

import json

import numpy as np
import pytest

from CTNormalizeLib.errors import BadInputError, NoModelError, ResourceExhaustedError
from CTNormalizeLib.protocols import parse_spec
from CTNormalizeLib.volume import Volume

SRC = parse_spec("kernel=sharp,dose=0.25,thickness=2")
TGT = parse_spec("kernel=smooth,dose=1,thickness=1")
COVERS = {"source": {"kernel": ["smooth", "standard", "sharp", "very-sharp"], "dose": [0.1, 1.0],
                     "thickness": [1.0, 5.0]},
          "targets": [{"kernel": "smooth", "dose": 1.0, "thickness": [1.0, 5.0]}]}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    import torch

    from CTNormalizeLib.models import build_model
    from CTNormalizeLib.models.registry import read_package
    from CTNormalizeLib.train.package import write_package

    torch.manual_seed(0)
    arch = {"name": "conditioned2.5d", "params": {"context": 5, "width": 16, "head": 8, "blocks": 2}}
    m = build_model(arch)
    with torch.no_grad():
        for p in m.parameters():  # untrained but not the identity: the output really changes
            p.add_(0.05 * torch.randn_like(p))
        # An untrained pixel-shuffle decoder paints a 4-periodic pattern that would hide
        # everything else; keep the smooth full-resolution path only (head -> tail), whose
        # zero padding at window edges is what makes seams when tiles are not blended.
        m.up1.weight.zero_()
        m.up1.bias.zero_()
    d = tmp_path_factory.mktemp("models") / "toy"
    write_package(m, d, {"name": "toy", "architecture": arch, "covers": COVERS, "priority": 1,
                         "training_data": {"kind": "untrained toy weights for engine tests"},
                         "io": {"hu_window": [-1100, 900], "scale": {"offset": 0, "divisor": 1000},
                                "context": 5, "z_up_factor": None}})
    return read_package(d)


def _body_volume(nz=8, n=128, gradient=True, seed=0):
    z, y, x = np.mgrid[0:nz, 0:n, 0:n].astype(np.float32)
    inside = (y - n / 2) ** 2 / (0.42 * n) ** 2 + (x - n / 2) ** 2 / (0.45 * n) ** 2 < 1
    body = -200.0 + 3.0 * x + 1.5 * y + 2.0 * z if gradient else np.full(x.shape, 40.0, np.float32)
    hu = np.where(inside, body, -1000.0).astype(np.float32)
    if not gradient:
        hu += np.random.default_rng(seed).normal(0, 20, hu.shape).astype(np.float32) * inside
    return Volume(hu, spacing=(2.0, 0.7, 0.7))


def test_seams_not_measurable_on_smooth_gradient(package):
    from CTNormalizeLib.inference import run_model

    from CTNormalizeLib.inference.masks import body_mask
    from CTNormalizeLib.inference.qc import seam_ratio
    from CTNormalizeLib.inference.zgrid import resample_z

    vol = _body_volume(nz=4, n=128)
    res = run_model(package, vol, SRC, TGT, device="cpu", tile=64, overlap=0.5)
    by, bx = res.qc["tile_borders"]["y"], res.qc["tile_borders"]["x"]
    assert by and bx, "the test needs tile borders inside the volume"
    assert res.qc["seam_ratio"] < 1.25
    assert not any(w["code"] == "QC_SEAMS" for w in res.warnings)
    # the figure can fail: a 3 HU step at one tile border is clearly measured...
    inp = resample_z(vol.hu, 2.0, 1.0, 2.0, 1.0)
    change = res.volume.hu - inp
    stepped = change.copy()
    stepped[:, :, bx[len(bx) // 2]:] += 3.0
    body = body_mask(inp)
    assert seam_ratio(stepped, by, bx, body) > 1.5 * seam_ratio(change, by, bx, body)
    # ...and so are abutting tiles without overlap or blending
    hard = run_model(package, vol, SRC, TGT, device="cpu", tile=64, overlap=0.0)
    assert hard.qc["seam_ratio"] > 1.5


def test_whole_slice_tile_has_no_borders(package):
    from CTNormalizeLib.inference import run_model

    res = run_model(package, _body_volume(nz=6, n=96), SRC, TGT, device="cpu")
    assert res.qc["seam_ratio"] is None and res.qc["tile_borders"] == {"y": [], "x": []}


def test_z_grid_and_geometry(package):
    from CTNormalizeLib.inference import run_model

    vol = _body_volume(nz=10, n=64)
    res = run_model(package, vol, SRC, TGT, device="cpu")
    assert res.volume.shape == (19, 64, 64)  # 2 mm x 10 -> 1 mm, first slices aligned
    assert res.volume.spacing == (1.0, 0.7, 0.7)
    assert res.volume.origin == vol.origin and res.volume.direction == vol.direction
    assert res.model_sha256 == package.sha256 and res.device == "cpu"


def test_deterministic_on_cpu_and_input_untouched(package):
    from CTNormalizeLib.inference import run_model

    vol = _body_volume(nz=6, n=64, gradient=False)
    before = vol.hu.copy()
    a = run_model(package, vol, SRC, TGT, device="cpu", tile=64)
    b = run_model(package, vol, SRC, TGT, device="cpu", tile=64)
    np.testing.assert_array_equal(a.volume.hu, b.volume.hu)
    np.testing.assert_array_equal(vol.hu, before)


def test_air_outside_body_and_bone_pass_through(package):
    from CTNormalizeLib.inference import run_model
    from CTNormalizeLib.inference.zgrid import resample_z

    vol = _body_volume(nz=6, n=96, gradient=False)
    hu = vol.hu.copy()
    hu[:, 40:56, 40:56] = 1600.0  # dense bone / metal block, beyond the model's window
    vol = vol.with_array(hu)
    res = run_model(package, vol, SRC, TGT, device="cpu")
    ref = resample_z(hu, 2.0, 1.0, 2.0, 1.0)
    out = res.volume.hu
    from scipy import ndimage as ndi

    far_air = ~ndi.binary_dilation(ref > -500, iterations=8)
    assert far_air.sum() > 1000
    np.testing.assert_array_equal(out[far_air], ref[far_air])  # air outside the body stays as it was
    np.testing.assert_allclose(out[:, 44:52, 44:52], ref[:, 44:52, 44:52])  # bone core
    assert np.abs(out[:, 60:70, 20:30] - ref[:, 60:70, 20:30]).max() > 0.1  # soft tissue was processed


def _oom_patch(monkeypatch, exc_factory, fail_on="cuda"):
    """Out-of-memory on the 'GPU' (the resident pipeline on the CPU standing in for one) or on the CPU."""
    import torch

    from CTNormalizeLib.inference import engine, resident, tiling

    calls = []
    real_net, real_chunk = resident.network, tiling.infer_chunk_2d

    def fail():
        try:
            raise exc_factory()
        except Exception as e:  # noqa: BLE001 - what the real call does with an allocation failure
            if fail_on == "cpu" and tiling.is_oom(e):
                raise tiling.TileOOM(str(e)) from e
            raise

    def fake_net(run_mod, xb, cond, roi_hw, overlap):
        calls.append(("cuda", int(roi_hw[0]), int(xb.shape[0])))
        if fail_on == "cuda":
            fail()
        return real_net(run_mod, xb, cond, roi_hw, overlap)

    def fake_chunk(module, x, cond, device, roi, overlap, multiple=4, sw_batch=16, precision="auto"):
        calls.append((device, int(roi), int(x.shape[0])))
        if fail_on == "cpu":
            fail()
        return real_chunk(module, x, cond, device, roi, overlap, multiple, sw_batch, precision)

    monkeypatch.setattr(resident, "network", fake_net)
    monkeypatch.setattr(tiling, "infer_chunk_2d", fake_chunk)
    monkeypatch.setattr(engine, "resolve_device", lambda d="auto": "cpu" if fail_on == "cpu" else "cuda:0")
    monkeypatch.setattr(resident, "torch_device", lambda name: torch.device("cpu"))
    monkeypatch.setattr(resident, "oom_policy_name", lambda dev: "cuda:0")
    return calls


@pytest.mark.parametrize("kind", ["OutOfMemoryError", "RuntimeError"])
def test_cuda_oom_retries_smaller_then_falls_back_to_cpu(package, monkeypatch, kind):
    import torch

    from CTNormalizeLib.inference import run_model

    vol = _body_volume(nz=6, n=128)
    expected = run_model(package, vol, SRC, TGT, device="cpu", tile=128, chunk=4)
    if kind == "OutOfMemoryError":
        factory = lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")  # noqa: E731
    else:
        factory = lambda: RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")  # noqa: E731
    calls = _oom_patch(monkeypatch, factory)
    res = run_model(package, vol, SRC, TGT, device="cuda", tile=128, chunk=4)
    codes = [w["code"] for w in res.warnings]
    assert "OOM_RETRY" in codes and codes.count("CUDA_OOM_CPU_FALLBACK") == 1
    cuda_calls = [c for c in calls if c[0].startswith("cuda")]
    assert cuda_calls[0][1:] == (128, 4)
    sizes = [c[1] * c[1] * c[2] for c in cuda_calls]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)  # strictly smaller each retry
    assert res.device == "cpu"
    np.testing.assert_array_equal(res.volume.hu, expected.volume.hu)


def test_cpu_oom_at_smallest_tile_is_resource_exhausted(package, monkeypatch):
    from CTNormalizeLib.inference import run_model

    _oom_patch(monkeypatch, lambda: RuntimeError("DefaultCPUAllocator: can't allocate memory"), fail_on="cpu")
    with pytest.raises(ResourceExhaustedError):
        run_model(package, _body_volume(nz=4, n=64), SRC, TGT, device="cpu", tile=64, chunk=1)


def test_non_oom_errors_are_not_swallowed(package, monkeypatch):
    from CTNormalizeLib.inference import run_model

    _oom_patch(monkeypatch, lambda: ValueError("boom"))
    with pytest.raises(ValueError, match="boom"):
        run_model(package, _body_volume(nz=4, n=64), SRC, TGT, device="cuda")


def test_uncovered_pair_is_no_model(package):
    from CTNormalizeLib.inference import run_model

    with pytest.raises(NoModelError, match="target"):
        run_model(package, _body_volume(nz=4, n=64), SRC, parse_spec("kernel=very-sharp,dose=1,thickness=1"))


def test_qc_flags_large_changes_and_drift():
    from CTNormalizeLib.inference.qc import measure_qc

    vol = _body_volume(nz=4, n=64, gradient=False).hu
    body = vol > -500
    qc, warns = measure_qc(vol, vol + 80.0 * body, body)
    codes = {w["code"] for w in warns}
    assert {"QC_HU_DRIFT", "QC_LARGE_CHANGE"} <= codes
    assert qc["hu_drift"]["muscle"] == pytest.approx(80.0, abs=1)
    qc, warns = measure_qc(vol, vol.copy(), body)
    assert warns == [] and qc["changed_fraction"] == 0.0


# -- registry --------------------------------------------------------------------------------

def test_registry_covers_and_picks_priority(package, tmp_path):
    import shutil

    from CTNormalizeLib.models.registry import find_model, list_models

    d = tmp_path / "m"
    shutil.copytree(package.path, d / "toy")
    card = json.loads((d / "toy" / "card.json").read_text())
    card.update(name="toy-hi", priority=5)
    shutil.copytree(package.path, d / "toy-hi")
    (d / "toy-hi" / "card.json").write_text(json.dumps(card))
    assert [p.name for p in list_models([d])] == ["toy-hi", "toy"]
    assert find_model(SRC, TGT, dirs=[d]).name == "toy-hi"
    assert find_model(SRC, parse_spec("kernel=sharp,dose=1,thickness=1"), dirs=[d]) is None
    assert find_model(parse_spec("kernel=sharp,dose=0.05,thickness=1"), TGT, dirs=[d]) is None
    assert find_model(SRC, TGT, dirs=[d], name="toy").name == "toy"


def test_registry_env_folder(package, tmp_path, monkeypatch):
    import shutil

    from CTNormalizeLib.models.registry import list_models

    shutil.copytree(package.path, tmp_path / "user" / "toy")
    monkeypatch.setenv("CTNORMALIZE_MODELS", str(tmp_path / "user"))
    assert "toy" in [p.name for p in list_models()]


def test_tampered_weights_refused(package, tmp_path):
    import shutil

    from CTNormalizeLib.models.registry import read_package

    shutil.copytree(package.path, tmp_path / "bad")
    w = tmp_path / "bad" / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(BadInputError, match="sha256"):
        read_package(tmp_path / "bad").load()


def test_load_never_uses_pickle(package, monkeypatch):
    import pickle

    import torch

    from CTNormalizeLib.models.registry import read_package

    def forbidden(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    module = read_package(package.path).load()
    assert sum(p.numel() for p in module.parameters()) > 0


def test_mtf_frontend_applied_before_the_model(package, tmp_path):
    import shutil

    from CTNormalizeLib.inference import run_model
    from CTNormalizeLib.inference.frontend import apply_frontend
    from CTNormalizeLib.models.registry import read_package

    shutil.copytree(package.path, tmp_path / "fe")
    card = json.loads((tmp_path / "fe" / "card.json").read_text())
    card["io"]["frontend"] = "mtf_ratio"
    (tmp_path / "fe" / "card.json").write_text(json.dumps(card))
    fe = read_package(tmp_path / "fe")
    vol = _body_volume(nz=4, n=64, gradient=False)
    a = run_model(package, vol, SRC, TGT, device="cpu").volume.hu
    b = run_model(fe, vol, SRC, TGT, device="cpu").volume.hu
    assert np.abs(a - b).max() > 1.0
    # same kernel: the front-end is the identity (same object back)
    assert apply_frontend("mtf_ratio", vol.hu, vol.spacing, "smooth", "smooth") is vol.hu
    with pytest.raises(ValueError):
        apply_frontend("nope", vol.hu, vol.spacing, "sharp", "smooth")
