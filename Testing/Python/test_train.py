"""Training: exact resume from a checkpoint, no-pickle checkpoints, held-out seeds refused, packaging."""

import json

import numpy as np
import pytest

from CTNormalizeLib.errors import BadInputError
from CTNormalizeLib.protocols import Protocol, parse_spec
from CTNormalizeLib.train.data import PairBank, Scan, SimSettings, TruthScans, load_bank, save_bank, simulated_bank
from CTNormalizeLib.train.loop import TrainConfig, train


def _bank(seed=0):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    truth = ndi.gaussian_filter(rng.normal(0, 1, (12, 48, 48)), 3) * 3000.0 - 500.0
    src_p = Protocol(kernel="sharp", dose=0.25, thickness=2.0, spacing=2.0)
    tgt_p = Protocol(kernel="smooth", dose=1.0, thickness=1.0, spacing=1.0)
    src = truth[::2] + rng.normal(0, 60, truth[::2].shape)
    tgt = truth + rng.normal(0, 10, truth.shape)
    return PairBank([TruthScans("t", [Scan(src.astype(np.float32), src_p)], [Scan(tgt.astype(np.float32), tgt_p)])])


def _cfg(**kw):
    base = dict(arch={"name": "conditioned2.5d", "params": {"context": 3, "width": 8, "head": 4, "blocks": 1}},
                steps=2, batch=2, patch=32, lr=1e-3, warmup=1, ckpt_every=100, curriculum=True)
    base.update(kw)
    return TrainConfig(**base)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("gan", [False, True])
def test_resume_is_identical_to_uninterrupted(tmp_path, gan):
    import torch

    kw = dict(gan_weight=5e-3, fm_weight=1.0) if gan else {}
    bank = _bank()
    full = train(_cfg(**kw), bank, tmp_path / "full")
    part = train(_cfg(**kw), bank, tmp_path / "part", stop_after=1)
    assert part["step"] == 1 and part["stopped_early"]
    resumed = train(_cfg(**kw), bank, tmp_path / "part", resume=True)
    assert resumed["step"] == 2
    a, b = _weights(full["model"]), _weights(resumed["model"])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and the run really trained: weights differ from a fresh model
    fresh = train(_cfg(steps=0, **kw), bank, tmp_path / "fresh")["model"]
    assert any(not torch.equal(a[k], v) for k, v in _weights(fresh).items())


def test_checkpoint_has_no_pickle(tmp_path):
    train(_cfg(), _bank(), tmp_path / "run", stop_after=1)
    ck = tmp_path / "run" / "checkpoint"
    names = sorted(p.name for p in ck.iterdir())
    assert names == ["model.safetensors", "optim.safetensors", "state.json"]
    state = json.loads((ck / "state.json").read_text())
    assert state["state"]["step"] == 1
    for p in ck.glob("*.safetensors"):
        assert p.read_bytes()[8:9] == b"{"  # safetensors header, not a pickle stream


def test_held_out_seeds_refused():
    with pytest.raises(BadInputError, match="held out"):
        simulated_bank(SimSettings(phantom_seeds=(3, 1000), lung1_crops=0))


def test_manifest_bank(tmp_path):
    from CTNormalizeLib.io import write_volume
    from CTNormalizeLib.train.data import manifest_bank
    from CTNormalizeLib.volume import Volume

    rng = np.random.default_rng(0)
    write_volume(Volume(rng.normal(0, 1, (8, 40, 40)).astype(np.float32) - 500, (2.0, 0.7, 0.7)), tmp_path / "s.nrrd")
    write_volume(Volume(rng.normal(0, 1, (16, 40, 40)).astype(np.float32) - 500, (1.0, 0.7, 0.7)), tmp_path / "t.nrrd")
    write_volume(Volume(rng.normal(0, 1, (16, 30, 30)).astype(np.float32) - 500, (1.0, 0.7, 0.7)), tmp_path / "u.nrrd")
    man = {"pairs": [{"source": "s.nrrd", "target": "t.nrrd", "source_protocol": "kernel=sharp,dose=0.5",
                      "target_protocol": "kernel=smooth,dose=1"}]}
    (tmp_path / "m.json").write_text(json.dumps(man))
    bank = manifest_bank(tmp_path / "m.json")
    src = bank.truths[0].sources[0].protocol
    assert src.thickness == 2.0 and src.spacing == 2.0 and bank.truths[0].targets[0].protocol.spacing == 1.0
    man["pairs"][0]["target"] = "u.nrrd"
    (tmp_path / "m.json").write_text(json.dumps(man))
    with pytest.raises(BadInputError, match="in-plane grid"):
        manifest_bank(tmp_path / "m.json")


def test_bank_roundtrip(tmp_path):
    bank = _bank()
    p = save_bank(bank, tmp_path / "bank.npz")
    back = load_bank(p)
    assert len(back.truths) == 1
    np.testing.assert_array_equal(back.truths[0].sources[0].hu, bank.truths[0].sources[0].hu)
    assert back.truths[0].targets[0].protocol.kernel == "smooth"
    rng = np.random.default_rng(0)
    x, y, c = back.sample(rng, 3, 32, 5, -1100, 900, 0, 1000)
    assert x.shape == (3, 5, 32, 32) and y.shape == (3, 1, 32, 32) and c.ndim == 2


@pytest.mark.slow
def test_training_reduces_loss(tmp_path):
    cfg = _cfg(steps=40, lr=3e-3, warmup=5, curriculum=False, batch=4, log_every=1)
    res = train(cfg, _bank(), tmp_path / "run")
    import csv

    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 41))
    l1 = np.array([float(r["l1"]) for r in rows])
    assert np.all(np.isfinite(l1))
    # batch-to-batch noise is large: the last ten steps must be lower than the first ten beyond that noise
    # (measured: mean 0.0434 -> 0.0358, Mann-Whitney p = 5e-4)
    from scipy.stats import mannwhitneyu

    assert l1[-10:].mean() < l1[:10].mean(), l1
    assert mannwhitneyu(l1[:10], l1[-10:], alternative="greater").pvalue < 0.01, l1
    assert res["final_l1"] == pytest.approx(l1.mean(), rel=1e-4)  # the mean of the last 50 (here all 40) steps


def test_train_cli_writes_a_loadable_package(tmp_path, monkeypatch):
    from CTNormalizeLib.cli.main import main
    from CTNormalizeLib.models.registry import read_package
    from CTNormalizeLib.train import recipes

    save_bank(_bank(), tmp_path / "bank.npz")
    # keep the recipe's everything but the size: a tiny network for a test
    orig = recipes.default_config

    def tiny(**over):
        cfg = orig(**over)
        cfg.arch = {"name": "conditioned2.5d", "params": {"context": 5, "width": 8, "head": 4, "blocks": 1}}
        cfg.batch, cfg.patch = 2, 32
        return cfg

    from CTNormalizeLib.train import run as run_mod

    monkeypatch.setitem(run_mod.RECIPES, "default", (tiny,) + run_mod.RECIPES["default"][1:])
    rc = main(["train", "--recipe", "default", "-o", str(tmp_path / "run"), "--bank", str(tmp_path / "bank.npz"),
               "--steps", "2", "--no-validate", "--package-dir", str(tmp_path / "pkg")])
    assert rc == 0
    pkg = read_package(tmp_path / "pkg")
    assert pkg.card["io"]["frontend"] == "mtf_ratio" and pkg.card["training"]["step"] == 2
    assert pkg.card["training_data"]["held_out"].startswith("phantom seeds >= 1000")
    assert pkg.covers(parse_spec("kernel=sharp,dose=0.25,thickness=2"), parse_spec("kernel=smooth,dose=1,thickness=1"))
    pkg.load()


def test_soft_ei_loss_zero_for_identical_and_grows_with_emphysema_difference():
    import torch

    from CTNormalizeLib.train.loop import soft_ei_loss

    rng = torch.Generator().manual_seed(0)
    a = torch.rand((2, 1, 16, 16), generator=rng)
    assert float(soft_ei_loss(a, a, threshold=0.1, tau=0.01)) == 0.0
    b = a.clone()
    b[:, :, :4] = 0.0  # a quarter of each patch below the threshold
    c = a.clone()
    c[:, :, :8] = 0.0  # half of each patch
    l_b = float(soft_ei_loss(b, a, threshold=0.1, tau=0.01))
    l_c = float(soft_ei_loss(c, a, threshold=0.1, tau=0.01))
    assert 0.1 < l_b < l_c
    x = b.clone().requires_grad_(True)
    soft_ei_loss(x, a, threshold=0.1, tau=0.05).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_training_never_writes_its_package_over_an_input(tmp_path, capsys):
    """--package-dir the continued recipe's parent package (or a folder holding the bank) was written over
    in place, weights first, card after."""
    import shutil

    from CTNormalizeLib.cli.main import main
    from CTNormalizeLib.train.run import _parent_package
    from CTNormalizeLib.train.package import write_package

    parent = _parent_package("denoise-v2c")
    assert parent is not None and parent.name == "ctn-denoise-v2b"
    before = {p.name: p.read_bytes() for p in parent.iterdir()}
    rc = main(["train", "--recipe", "denoise-v2c", "-o", str(tmp_path / "run"), "--steps", "1",
               "--package-dir", str(parent)])
    assert rc == 2 and "never overwrites its inputs" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in parent.iterdir()} == before
    (tmp_path / "data").mkdir()
    save_bank(_bank(), tmp_path / "data" / "bank.npz")
    rc = main(["train", "--recipe", "default", "-o", str(tmp_path / "run2"), "--bank",
               str(tmp_path / "data" / "bank.npz"), "--steps", "1", "--package-dir", str(tmp_path / "data")])
    assert rc == 2 and (tmp_path / "data" / "bank.npz").is_file() and not (tmp_path / "run2").exists()

    # a package folder is replaced whole: a failed write leaves the earlier package as it was
    import torch

    from CTNormalizeLib.errors import BadInputError

    card = {"name": "x", "architecture": {"name": "x"}, "covers": {}, "training_data": {},
            "io": {"hu_window": [-1000, 1000], "scale": {"offset": 0, "divisor": 1}, "context": 1}}
    out = write_package(torch.nn.Linear(2, 2), tmp_path / "pkg", card)
    old = {p.name: p.read_bytes() for p in out.iterdir()}

    class Broken(torch.nn.Module):
        def state_dict(self, *a, **k):
            raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        write_package(Broken(), out, card)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old
    with pytest.raises(BadInputError, match="training_data"):  # a card the registry would refuse
        write_package(torch.nn.Linear(2, 2), out, {k: v for k, v in card.items() if k != "training_data"})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old
    shutil.rmtree(out)
