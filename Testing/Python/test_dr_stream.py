"""v3's GPU recipe on the CPU: whole scans from the torch scanner against the reference, cases made as the
CPU bank makes its pairs, batches, worker failures, the packed lung1 slabs, and a tiny run to a package
on a machine without SimpleITK."""

import json
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


@pytest.mark.parametrize("thickness", [1.0, 2.0])
def test_a_whole_scan_matches_the_reference(truth, thickness):
    det = replace(DEFAULT_SCANNER, views=None)
    ref_p = project_truth(truth, det)
    dp = ts.project_volume(truth, det)
    prot = Protocol(kernel="standard", dose=0.3, thickness=thickness)
    ref = simulate_scan(truth, prot, 1, detector=det, projections=ref_p, noise=False).hu
    got = ts.reconstruct_scan(truth, dp, prot, noise=False).numpy()
    assert got.shape == ref.shape  # the reference's z grid
    assert np.sqrt(np.mean((got - ref) ** 2)) < 0.03 * np.sqrt(np.mean((ref - ref.mean()) ** 2))
    assert abs(float((got - ref).mean())) < 1.0
    ref_n = simulate_scan(truth, prot, 1, detector=det, projections=ref_p).hu - ref
    got_n = ts.reconstruct_scan(truth, dp, prot, seed=3).numpy() - got
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


def test_the_pool_replaces_its_oldest_case():
    s = object.__new__(DRStream)
    s.settings, s.pool, s._next, s.cases_made = _tiny(pool=2), [], 0, 0
    for name in "abc":
        s._add(Case(name, None, None, []))
    assert [c.truth for c in s.pool] == ["c", "b"] and s.cases_made == 3


def test_batches_are_scaled_patches_of_the_pool(stream):
    x, y, c = stream.sample(np.random.default_rng(1), 8, 32, 5, -1100.0, 900.0, 0.0, 1000.0)
    assert tuple(x.shape) == (8, 5, 32, 32) and tuple(y.shape) == (8, 1, 32, 32) and tuple(c.shape) == (8, SIGNATURE_FEATURES)
    assert float(x.min()) >= -1.1 - 1e-6 and float(x.max()) <= 0.9 + 1e-6
    x2, y2, _ = stream.sample(np.random.default_rng(1), 8, 32, 5, -1100.0, 900.0, 0.0, 1000.0)
    assert torch.equal(x, x2) and torch.equal(y, y2)  # a function of the pool and the draws


def test_mostly_air_patches_are_mostly_skipped():
    s = object.__new__(DRStream)
    s._errors, s._queue, s.pool = [], None, []
    body = torch.full((3, 32, 32), 0.0)
    air = torch.full((3, 32, 32), -1000.0)
    s.pool = [Case("body", body, body, [0.0]), Case("air", air, air, [1.0])]
    s._drain = lambda block=False: None
    _, y, c = s.sample(np.random.default_rng(0), 400, 16, 3, -1100.0, 900.0, 0.0, 1000.0)
    share_air = float((c[:, 0] == 1.0).float().mean())
    assert 0.05 < share_air < 0.3  # 15 % of the air candidates kept: ~13 % of the batch


def test_patches_larger_than_the_volumes_are_refused(stream):
    with pytest.raises(BadInputError, match="patches"):
        stream.sample(np.random.default_rng(0), 2, 128, 5, -1100.0, 900.0, 0.0, 1000.0)


def test_a_failing_worker_stops_the_run_with_its_error(monkeypatch):
    s = DRStream(_tiny(phantom_seeds=(1,)), "cpu")

    def boom(rng):
        raise ValueError("simulated failure")

    monkeypatch.setattr(s, "make_case", boom)
    with pytest.raises(RuntimeError, match="simulated failure"):
        s.start()
    s.close()


def test_held_out_phantoms_are_refused():
    with pytest.raises(BadInputError, match="held out"):
        dr_stream.stream_truths(_tiny(phantom_seeds=(1, 1000)))


def test_packed_lung1_slabs_round_trip(tmp_path, monkeypatch):
    slabs = [Volume(np.random.default_rng(i).normal(-500, 300, (3, 16, 16)).astype(np.float32), (5.0, 1.4, 1.4))
             for i in range(2)]
    monkeypatch.setattr("CTNormalizeLib.train.dr_data.lung1_slabs", lambda settings, rng: slabs)
    path = dr_stream.pack_lung1_truths(_tiny(lung1_slabs=2), tmp_path / "l.npz")
    got = dr_stream.lung1_truths(_tiny(lung1_slabs=2, lung1_file=str(path)), None)
    assert len(got) == 2 and got[0].spacing == (5.0, 1.4, 1.4)
    assert np.abs(got[1].hu - slabs[1].hu).max() <= 0.5  # int16 HU
    with pytest.raises(BadInputError, match="pack_v3_truths"):
        dr_stream.lung1_truths(_tiny(lung1_slabs=2, lung1_file=str(tmp_path / "missing.npz")), None)


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
pkg = _train_v3_stream(Path(sys.argv[1]), 6, None, 0, None, None, 'cpu', settings=st)
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
    assert card["name"] == "ctn-conditioned-v3-gpu" and card["recipe"]["steps_done"] == 6
    assert card["training_data"]["cases_made"] >= 2 and card["training"]["device"] == "cpu"
    assert card["io"]["conditioning"] == "signature"


def test_phantoms_made_in_spawned_processes_are_the_ones_made_here():
    here = dr_stream.stream_truths(_tiny(), processes=1)
    spawned = dr_stream.stream_truths(_tiny(), processes=2)
    assert [n for n, _, _ in here] == [n for n, _, _ in spawned] == ["phantom-1", "phantom-2"]
    for (_, a, _), (_, b, _) in zip(here, spawned):
        assert a.spacing == b.spacing and np.array_equal(a.hu, b.hu)
