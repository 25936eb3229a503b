"""v3's GPU recipe on the CPU: whole scans from the torch scanner against the reference, cases made as the
CPU bank makes its pairs, batches, worker failures, the packed lung1 slabs, and a tiny run to a package
on a machine without SimpleITK."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from CTNormalizeLib.errors import BadInputError  # noqa: E402
from CTNormalizeLib.models.conditioning import SIGNATURE_FEATURES  # noqa: E402
from CTNormalizeLib.protocols import Protocol  # noqa: E402
from CTNormalizeLib.simulate import DEFAULT_SCANNER, make_phantom, project_truth, simulate_scan  # noqa: E402
from CTNormalizeLib.simulate import torch_scanner as ts  # noqa: E402
from CTNormalizeLib.train import dr_stream  # noqa: E402
from CTNormalizeLib.simulate import slice_profile  # noqa: E402
from CTNormalizeLib.train.dr_stream import Case, DRStream, StreamSettings  # noqa: E402
from CTNormalizeLib.volume import Volume  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _tiny(**over):
    base = dict(phantom_seeds=(1, 2), phantom_slices=16, phantom_size=64, lung1_slabs=0, pool=6, min_pool=3,
                workers=1)
    return StreamSettings(**{**base, **over})


@pytest.fixture(scope="module")
def truth():
    return make_phantom(5, shape=(12, 96, 96), spacing=(0.5, 1.0, 1.0), emphysema=None, nodules=None).volume


@pytest.mark.parametrize("thickness, views, noise_det", [
    (1.0, None, None),
    (2.0, None, None),
    (2.0, 100, {"electronic_std": 25.0, "aec_strength": 0.0}),  # fewer views; a randomized detector's noise
])
def test_a_whole_scan_matches_the_reference(truth, thickness, views, noise_det):
    det = replace(DEFAULT_SCANNER, views=views)
    ref_p = project_truth(truth, det)
    dp = ts.project_volume(truth, det)
    prot = Protocol(kernel="standard", dose=0.05 if noise_det else 0.3, thickness=thickness)
    ref = simulate_scan(truth, prot, 1, detector=det, projections=ref_p, noise=False).hu
    got = ts.reconstruct_scan(truth, dp, prot, noise=False).numpy()
    assert got.shape == ref.shape  # the reference's z grid
    assert np.sqrt(np.mean((got - ref) ** 2)) < 0.03 * np.sqrt(np.mean((ref - ref.mean()) ** 2))
    assert abs(float((got - ref).mean())) < 1.0
    noisy_det = replace(det, **noise_det) if noise_det else None
    ref_n = simulate_scan(truth, prot, 1, detector=noisy_det or det, projections=ref_p).hu - ref
    got_n = ts.reconstruct_scan(truth, dp, prot, seed=3, det=noisy_det).numpy() - got
    c = np.s_[:, 30:66, 30:66]
    assert got_n[c].std() == pytest.approx(ref_n[c].std(), rel=0.1)


def test_thicker_slices_have_less_noise(truth):
    dp = ts.project_volume(truth, DEFAULT_SCANNER)
    c = np.s_[:, 30:66, 30:66]
    clean = {t: ts.reconstruct_scan(truth, dp, Protocol(kernel="standard", dose=0.3, thickness=t), noise=False)
             for t in (1.0, 3.0)}
    std = {t: float((ts.reconstruct_scan(truth, dp, Protocol(kernel="standard", dose=0.3, thickness=t), seed=2)
                     - clean[t])[c].std()) for t in (1.0, 3.0)}
    assert std[3.0] < 0.75 * std[1.0]


@pytest.fixture(scope="module")
def stream():
    s = DRStream(_tiny(), "cpu")
    s.fill(4, np.random.default_rng(0))
    return s


def test_cases_are_what_the_engine_gives_the_network(stream):
    for case in stream.pool:
        # both on the target z grid from the same first slice (the source's end may give one slice less or more,
        # as in the CPU bank: patches come from the slices both have)
        assert case.input_hu.shape[1:] == case.target_hu.shape[1:]
        assert abs(case.input_hu.shape[0] - case.target_hu.shape[0]) <= 1
        assert len(case.cond) == SIGNATURE_FEATURES
        info = case.info
        assert info["noise_hu"] > 0 and np.isfinite(info["measured_mtf50"])
        # the first feature is the measured source noise, log2 in units of 20 HU
        assert case.cond[0] == pytest.approx(np.log2(max(info["noise_hu"], 0.5) / 20.0))
        # the label is noise-free; the input is not
        assert float(case.target_hu.std()) > 0 and not torch.equal(case.input_hu, case.target_hu)


def test_a_case_is_measured_on_the_source_grid_and_resampled_to_the_target(monkeypatch):
    """network_pair gets the source scan with the source's slice spacing, and both thicknesses."""
    from CTNormalizeLib.train import dr_data

    seen = []

    def spy(hu, spacing, t_s, t_t, w_t, lam):
        seen.append((hu.shape[0], spacing, t_s, t_t))
        return dr_data.network_pair(hu, spacing, t_s, t_t, w_t, lam)

    monkeypatch.setattr(dr_stream, "network_pair", spy)
    s = DRStream(_tiny(phantom_seeds=(1,), thicknesses=(3.0,), same_thickness=0.0), "cpu")
    case = s.make_case(np.random.default_rng(5))
    n_src, spacing, t_s, t_t = seen[0]
    assert spacing[0] == t_s == case.info["source_thickness"] and t_t == case.info["target_thickness"]
    assert n_src == len(slice_profile.output_positions(16, 0.5, t_s))


def _pool(cases, capacity=None):
    pool = dr_stream.PatchPool(capacity or len(cases), "cpu")
    for c in cases:
        pool.add(c)
    return pool


def test_the_pool_replaces_its_oldest_case():
    vol = lambda v: torch.full((2, 4, 4), float(v))  # noqa: E731
    pool = _pool([Case(name, vol(i), vol(i), [float(i)]) for i, name in enumerate("abc")], capacity=2)
    assert [c.truth for c in pool] == ["c", "b"] and pool.added == 3
    # the stacked slots follow: slot 0 now holds c's pixels and conditioning
    x, y, c = pool.sample(np.random.default_rng(0), 16, 4, 1, -1100.0, 900.0, 0.0, 1.0)
    assert set(torch.unique(c).tolist()) == {1.0, 2.0} and torch.equal(x[:, 0, 0, 0], c[:, 0])


def test_cases_of_other_sizes_share_the_pool():
    """A larger case grows the stacks; patches come only from a case's own slices and pixels."""
    small = torch.full((2, 20, 20), 100.0)
    big = torch.full((5, 40, 30), 200.0)
    pool = _pool([Case("s", small, small, [1.0]), Case("b", big, big, [2.0])])
    x, y, c = pool.sample(np.random.default_rng(1), 64, 16, 5, -1100.0, 900.0, 0.0, 1.0)
    expect = torch.where(c[:, 0] == 1.0, 100.0, 200.0)
    assert torch.equal(x.amin(dim=(1, 2, 3)), expect) and torch.equal(y.amax(dim=(1, 2, 3)), expect)  # no padding cut
    assert set(c[:, 0].tolist()) == {1.0, 2.0}


def test_batches_are_scaled_patches_of_the_pool(stream):
    x, y, c = stream.sample(np.random.default_rng(1), 8, 32, 5, -1100.0, 900.0, 0.0, 1000.0)
    assert tuple(x.shape) == (8, 5, 32, 32) and tuple(y.shape) == (8, 1, 32, 32) and tuple(c.shape) == (8, SIGNATURE_FEATURES)
    assert float(x.min()) >= -1.1 - 1e-6 and float(x.max()) <= 0.9 + 1e-6
    x2, y2, _ = stream.sample(np.random.default_rng(1), 8, 32, 5, -1100.0, 900.0, 0.0, 1000.0)
    assert torch.equal(x, x2) and torch.equal(y, y2)  # a function of the pool and the draws


def test_a_batch_pairs_each_label_with_its_own_input_slice():
    """Rotation, flip, position and the context's centre slice are the label's (input = target here)."""
    vol = torch.from_numpy(np.random.default_rng(0).normal(0, 200, (6, 40, 40)).astype(np.float32))
    pool = _pool([Case("c", vol, vol, [0.0])])
    x, y, _ = pool.sample(np.random.default_rng(3), 32, 16, 5, -1100.0, 900.0, 0.0, 1000.0)
    assert torch.equal(x[:, 2], y[:, 0])
    assert not all(torch.equal(x[:, 0][i], x[:, 2][i]) for i in range(32))  # the neighbours are other slices


def test_inputs_come_from_the_inputs_and_labels_from_the_labels():
    vol = torch.from_numpy(np.random.default_rng(1).normal(0, 100, (4, 24, 24)).astype(np.float32))
    pool = _pool([Case("c", vol + 300.0, vol, [0.0])])
    x, y, _ = pool.sample(np.random.default_rng(2), 16, 8, 3, -1e9, 1e9, 0.0, 1.0)
    assert torch.allclose(x[:, 1], y[:, 0] + 300.0)


def test_case_pixels_are_views_of_the_pool_not_copies():
    small = torch.zeros((2, 8, 8))
    pool = _pool([Case("a", small, small + 1, [0.0])], capacity=2)
    pool.add(Case("b", torch.zeros((3, 16, 16)), torch.zeros((3, 16, 16)), [1.0]))  # grows the stacks
    a = pool[0]
    assert a.input_hu.shape == (2, 8, 8) and a.input_hu.data_ptr() == pool._inp[0].data_ptr()
    assert float(a.target_hu.mean()) == 1.0 and a.target_hu.data_ptr() == pool._tgt[0].data_ptr()


def test_patches_are_cut_in_all_eight_orientations_of_the_volume():
    """Each patch is some rotation / flip of the block at its place, and all eight occur; end slices repeat."""
    vol = torch.arange(3 * 8 * 8, dtype=torch.float32).reshape(3, 8, 8)
    pool = _pool([Case("c", vol, vol, [0.0])])
    x, y, _ = pool.sample(np.random.default_rng(0), 200, 8, 3, -1e9, 1e9, 0.0, 1.0)
    seen = set()
    for xi in x:
        k = int(xi[1].min()) // 64  # the centre slice the patch came from
        for o in range(8):
            m = torch.rot90(vol[k], o // 2, dims=(0, 1))
            m = torch.flip(m, dims=(1,)) if o % 2 else m
            if torch.equal(xi[1], m):
                seen.add(o)
                lo, hi = max(k - 1, 0), min(k + 1, 2)
                assert torch.equal(xi[0], xi[1] + 64 * (lo - k)) and torch.equal(xi[2], xi[1] + 64 * (hi - k))
                break
        else:
            pytest.fail("a patch that is no orientation of its slice")
    assert seen == set(range(8))


def test_mostly_air_patches_are_mostly_skipped():
    body = torch.full((3, 32, 32), 0.0)
    air = torch.full((3, 32, 32), -1000.0)
    pool = _pool([Case("body", body, body, [0.0]), Case("air", air, air, [1.0])])
    _, y, c = pool.sample(np.random.default_rng(0), 400, 16, 3, -1100.0, 900.0, 0.0, 1000.0)
    share_air = float((c[:, 0] == 1.0).float().mean())
    assert 0.05 < share_air < 0.3  # 15 % of the air candidates kept: ~13 % of the batch


def test_patches_larger_than_the_volumes_are_refused(stream):
    with pytest.raises(BadInputError, match="patches"):
        stream.sample(np.random.default_rng(0), 2, 128, 5, -1100.0, 900.0, 0.0, 1000.0)


def test_worker_processes_fill_the_pool_and_a_failing_one_stops_the_run():
    st = _tiny(phantom_seeds=(1,), pool=3, min_pool=2)
    with DRStream(st, "cpu") as s:  # one spawned worker simulating the phantom
        assert len(s.pool) >= 2 and s.cases_made >= 2
        case = s.pool[0]
        assert case.truth == "phantom-1" and case.input_hu.shape[1:] == case.target_hu.shape[1:] == (64, 64)
        x, _, _ = s.sample(np.random.default_rng(0), 4, 32, 5, -1100.0, 900.0, 0.0, 1000.0)
        assert tuple(x.shape) == (4, 5, 32, 32)
    assert s._procs == []  # closed: no worker left running
    # a worker killed without a word (out of memory, a signal) stops the run instead of leaving the pool stale
    s = DRStream(st, "cpu").start()
    try:
        s._procs[0].kill()
        s._procs[0].join()
        with pytest.raises(RuntimeError, match="exit code"):
            s.sample(np.random.default_rng(0), 4, 32, 5, -1100.0, 900.0, 0.0, 1000.0)
    finally:
        s.close()
    # a truth only the worker touches (its views given here) that cannot be scanned: the worker's error stops the run
    with pytest.raises(RuntimeError, match="training-stream worker failed: AttributeError"):
        DRStream(st, "cpu", truths=[("bad", "not a volume", 0.5)], views=[DEFAULT_SCANNER]).start()


def test_held_out_phantoms_are_refused():
    with pytest.raises(BadInputError, match="held out"):
        dr_stream.stream_truths(_tiny(phantom_seeds=(1, 1000)))


def test_packed_lung1_slabs_round_trip_and_are_the_slabs_cut_here(tmp_path, monkeypatch):
    def cut(settings, rng):  # where slabs are cut depends on the generator, as lung1_slabs' do
        z0 = int(rng.integers(1000))
        return [Volume(np.random.default_rng(z0 + i).normal(-500, 300, (3, 16, 16)).astype(np.float32),
                       (5.0, 1.4, 1.4)) for i in range(settings.lung1_slabs)]

    monkeypatch.setattr("CTNormalizeLib.train.dr_data.lung1_slabs", cut)
    path = dr_stream.pack_lung1_truths(_tiny(lung1_slabs=2), tmp_path / "l.npz")
    got = dr_stream.lung1_truths(_tiny(lung1_slabs=2, lung1_file=str(path)), None)
    here = [v for n, v, _ in dr_stream.stream_truths(_tiny(lung1_slabs=2, phantom_seeds=(1,)), processes=1)
            if n.startswith("lung1")]
    assert len(got) == 2 and got[0].spacing == (5.0, 1.4, 1.4)
    for a, b in zip(got, here):
        assert np.abs(a.hu - b.hu).max() <= 0.5  # int16 HU of the same slabs
    with pytest.raises(BadInputError, match="pack_v3_truths"):
        dr_stream.lung1_truths(_tiny(lung1_slabs=2, seed=3, lung1_file=str(path)), None)  # cut for seed 0
    with np.load(path) as z:
        old = {k: z[k] for k in z.files if not k.startswith("pack_")}
    np.savez(tmp_path / "old.npz", **old)  # a pack from before packs said what they hold
    with pytest.raises(BadInputError, match="older version"):
        dr_stream.lung1_truths(_tiny(lung1_slabs=2, lung1_file=str(tmp_path / "old.npz")), None)
    with pytest.raises(BadInputError, match="pack_v3_truths"):
        dr_stream.lung1_truths(_tiny(lung1_slabs=2, lung1_file=str(tmp_path / "missing.npz")), None)
    (tmp_path / "scan.nrrd").write_bytes(b"NRRD0004\nnot an npz")
    with pytest.raises(BadInputError, match="not a packed lung1 file"):
        dr_stream.lung1_truths(_tiny(lung1_slabs=2, lung1_file=str(tmp_path / "scan.nrrd")), None)


_RUN = r"""
import json, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('SimpleITK', 'monai', 'finufft'):
            raise ImportError('not on the GPU machine: ' + name)
sys.meta_path.insert(0, Block())
from pathlib import Path
from CTNormalizeLib.train import recipes
from CTNormalizeLib.train.dr_stream import StreamSettings
from CTNormalizeLib.train.run import _train_v3_stream
recipes.V3_GPU_OVERRIDES = dict(recipes.V3_GPU_OVERRIDES, batch=4, patch=32)
st = StreamSettings(phantom_seeds=(1, 2), phantom_slices=16, phantom_size=64, lung1_slabs=0, pool=4, min_pool=2, workers=1)
pkg = _train_v3_stream(Path(sys.argv[1]), None, 0.05, 0, None, None, 'cpu', settings=st)
print(json.dumps({"package": str(pkg), "modules": [m for m in sys.modules if m.split('.')[0] in ('SimpleITK', 'finufft')]}))
"""


def test_a_tiny_stream_run_writes_a_package_without_simpleitk(tmp_path):
    r = subprocess.run([sys.executable, "-c", _RUN, str(tmp_path / "run")], capture_output=True, text=True,
                       cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["modules"] == []
    from CTNormalizeLib.models.registry import read_package

    pkg = read_package(Path(res["package"]))
    card = pkg.card
    assert card["name"] == "ctn-conditioned-v3-gpu" and card["recipe"]["steps_done"] >= 1
    probe = card["training_data"]["probe_s_per_step"]  # the schedule was sized from a timed probe
    assert 1e-4 < probe < 30 and card["hyperparameters"]["steps"] == max(20, int(0.95 * 60 * 0.05 / probe))
    assert card["training_data"]["cases_made"] >= 2 and card["training"]["device"] == "cpu"
    assert card["io"]["conditioning"] == "signature"
    # a run off CUDA is a try of the recipe's code: said so, ranked last, no CLI command that would run another recipe
    assert card["priority"] == -100 and "a try" in card["description"] and "ctnormalize train" not in card["recipe"]["command"]
    assert card["training_data"]["real_data"].startswith("none") and card["training_data"]["settings"]["lung1_file"] is None


def test_phantoms_made_in_spawned_processes_are_the_ones_made_here():
    here = dr_stream.stream_truths(_tiny(), processes=1)
    spawned = dr_stream.stream_truths(_tiny(), processes=2)
    assert [n for n, _, _ in here] == [n for n, _, _ in spawned] == ["phantom-1", "phantom-2"]
    for (_, a, _), (_, b, _) in zip(here, spawned):
        assert a.spacing == b.spacing and np.array_equal(a.hu, b.hu)


def test_the_gpu_script_runs_on_the_cpu(tmp_path):
    """benchmarks/gpu_train_v3.sh end to end, tiny, on torch's CPU device (its phantoms in spawned processes)."""
    env = dict(os.environ, CTN_CHECK_DEVICE="cpu", CTN_TRAIN_MINUTES="0.05", CTN_V3_PHANTOMS="2",
               CTN_V3_SIZE="64", CTN_V3_SLICES="16", CTN_V3_POOL="4", CTN_V3_LUNG1_SLABS="0", CTN_V3_WORKERS="1",
               CTN_V3_BATCH="16", CTN_V3_PATCH="48", CTN_V3_WIDTH="16")
    env.pop("PYTHON", None)  # the checkout's .venv is found by itself
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_train_v3.sh"), "out"], capture_output=True,
                       text=True, env=env, timeout=900, cwd=tmp_path)  # OUT_DIR relative to where it is called
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "out" / "gpu_train_v3.json").read_text())
    tmp_path = tmp_path / "out"
    assert res["device"] == "cpu" and res["steps_done"] >= 1 and res["cases_made"] >= 4
    assert (res["batch"], res["patch"]) == (16, 48)  # the CPU try's overrides reach the recipe, and its card
    pkg = tmp_path / "ctn-conditioned-v3-gpu-w16b6"  # another size, another name: the shipped package stays
    card = json.loads((pkg / "card.json").read_text())
    assert card["name"] == pkg.name and not (tmp_path / "ctn-conditioned-v3-gpu").exists()
    assert "batch=16" in card["recipe"]["command"] and "patch=48" in card["recipe"]["command"] and "arch=" in card["recipe"]["command"]
    assert card["architecture"]["params"]["width"] == 16 and card["architecture"]["params"]["blocks"] == 6
    assert (pkg / "model.safetensors").is_file()


def test_a_deadline_caps_the_minutes_once_setup_and_the_probe_are_done(tmp_path, monkeypatch):
    """A lease's end bounds the schedule: the steps fit in what is left of it, less the package's reserve."""
    import time

    from CTNormalizeLib.train import run as train_run

    class FakeStream:
        cases_made = 7

        def __init__(self, settings, device):
            time.sleep(0.2)  # setup, which a deadline must count

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def cases_per_second(self):
            return 1.0

    seen = {}

    def fake_train(cfg, stream, out, **kw):
        seen["cfg"] = cfg
        return {"step": cfg.steps, "steps": cfg.steps, "stopped_early": False, "seconds": 1.0, "model": None}

    monkeypatch.setattr(dr_stream, "DRStream", FakeStream)
    monkeypatch.setattr(train_run, "_probe_step_seconds", lambda *a, **k: 0.05)
    monkeypatch.setattr(train_run, "train", fake_train)
    monkeypatch.setattr(train_run, "write_package", lambda model, d, card: seen.setdefault("card", card))
    st = _tiny()
    deadline = time.time() + train_run.PACKAGE_RESERVE_S + 60.0  # one minute of training left at most
    train_run._train_v3_stream(tmp_path / "run", None, 6.0, 0, tmp_path / "pkg", None, "cpu", settings=st,
                               deadline=deadline)
    cfg = seen["cfg"]
    assert 0.9 < cfg.max_minutes < 1.0  # capped: setup's time counted, the reserve kept
    assert cfg.steps == int(0.95 * 60 * cfg.max_minutes / 0.05)
    # without a deadline the minutes asked for stand
    train_run._train_v3_stream(tmp_path / "run2", None, 6.0, 0, tmp_path / "pkg2", None, "cpu", settings=st)
    assert seen["cfg"].max_minutes == 6.0 and seen["cfg"].steps == int(0.95 * 60 * 6.0 / 0.05)


def test_the_denoise_gpu_script_simulates_its_clean_scans_when_asked(tmp_path):
    """benchmarks/gpu_train_denoise.sh with CTN_BANK=stream on torch's CPU device: no CPU bank to build or carry."""
    import time

    env = dict(os.environ, CTN_CHECK_DEVICE="cpu", CTN_TRAIN_MINUTES="5", CTN_BANK="stream", CTN_V3_PHANTOMS="2",
               CTN_V3_SIZE="128", CTN_V3_SLICES="16", CTN_V3_LUNG1_SLABS="0", CTN_BATCH="4",
               CTN_TRAIN_DEADLINE=str(time.time() + 25))  # a lease about to end: the 5 minutes shrink to what is left
    env.pop("PYTHON", None)
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_train_denoise.sh"), str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "out" / "gpu_train_denoise.json").read_text())
    assert res["steps_done"] >= 1 and res["bank"].endswith("clean_stream.npz") and res["bank_s"] > 0
    assert res["minutes"] < 0.5
    # what comes back from a lease: the package, the JSON and the loss curve; not the bank, not the checkpoints
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ctn-denoise-v1-gpu", "gpu_train_denoise.json", "log.csv"]
    card = json.loads((Path(res["package"]) / "card.json").read_text())
    assert card["training_data"]["clean"].startswith("4 noise-free target scans simulated on cpu")
    assert "CTN_BANK=stream" in card["recipe"]["command"] and card["recipe"]["bank"]["file"] == "clean_stream.npz"
    assert card["training_data"]["clean_settings"]["phantom_size"] == 128
    # lung1 slabs asked for but not packed: refused before anything runs (that machine cannot read lung1 itself)
    env.update(CTN_V3_LUNG1_SLABS="4", CTN_V3_LUNG1_PACK=str(tmp_path / "missing.npz"))
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_train_denoise.sh"), str(tmp_path / "out2")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and "pack_v3_truths.py" in r.stderr and not (tmp_path / "out2" / "log.csv").exists()


def test_a_clean_bank_is_what_the_denoiser_reads(tmp_path):
    from CTNormalizeLib.train.denoiser import clean_slices

    st = _tiny(phantom_seeds=(1,))
    path = dr_stream.write_clean_bank(st, "cpu", tmp_path / "b.npz", per_truth=2)
    vols = clean_slices(path)
    assert len(vols) == 2 and all(v.dtype == np.float32 and v.shape[1:] == (64, 64) for v in vols)
    assert all(float(v.std()) > 0 for v in vols) and not np.array_equal(vols[0], vols[1])  # two targets drawn


def test_the_lease_script_brings_back_the_package_and_fails_when_training_fails(tmp_path):
    """benchmarks/gpu_lease.sh on torch's CPU device: a few files back, the package named by its card; no time is
    left for the speed check here, and a failed training makes the whole call fail."""
    env = dict(os.environ, CTN_CHECK_DEVICE="cpu", CTN_V3_PHANTOMS="2", CTN_V3_SIZE="64", CTN_V3_SLICES="16",
               CTN_V3_POOL="4", CTN_V3_LUNG1_SLABS="0", CTN_V3_WORKERS="1", CTN_V3_BATCH="8", CTN_V3_WIDTH="16",
               CTN_TRAIN_SHARE_S="60", CTN_LEASE_S="100")
    env.pop("PYTHON", None)
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_lease.sh"), str(tmp_path / "out")], capture_output=True,
                       text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == [
        "card.json", "check.log", "gpu_train_v3.json", "log.csv", "model.safetensors", "train.log"]
    assert json.loads((out / "pkg" / "card.json").read_text())["name"] == "ctn-conditioned-v3-gpu-w16b6"
    env["CTN_V3_PATCH"] = "512"  # larger than the phantoms: the training stops with an error
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_lease.sh"), str(tmp_path / "bad")], capture_output=True,
                       text=True, env=env, timeout=600)
    assert r.returncode != 0 and "training exit 0" not in r.stdout
