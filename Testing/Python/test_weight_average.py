"""Averaging model packages' weights (scripts/average_weights.py, CTNormalizeLib.train.weight_average)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
ARCH = {"name": "conditioned2.5d", "params": {"context": 3, "width": 8, "head": 4, "blocks": 1, "cond_dim": 7}}
COVERS = {"conditioning": "measured noise", "noise_hu": [3.0, 150.0]}


def _package(folder: Path, name: str, seed: int, arch=ARCH, chain=None) -> Path:
    import torch

    from CTNormalizeLib.models import build_model
    from CTNormalizeLib.train.package import write_package

    torch.manual_seed(seed)
    m = build_model(arch)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p))
    card = {"name": name, "role": "denoiser", "architecture": arch, "covers": COVERS, "priority": 0,
            "io": {"hu_window": [-3000, 4000], "scale": {"offset": 0, "divisor": 1000}, "context": 3},
            "recipe": {"command": f"train {name}", "time_s": 1.0}, "metrics": {"x": seed},
            "training_data": {"kind": "random toy weights"}}
    if chain:
        card["chain"] = chain
    return write_package(m, folder / name, card)


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v.double().numpy() for k, v in load_file(str(path / "model.safetensors")).items()}


def test_average_is_the_mean_and_the_card_says_how(tmp_path):
    from CTNormalizeLib.models.registry import read_package, sha256_file
    from CTNormalizeLib.train.weight_average import average_packages

    chain = {"nlm_blend": {"noise_only": 0.3}, "flips": {"noise_only": 2}, "validation": {"x": 1}}
    paths = [_package(tmp_path, "a", 0), _package(tmp_path, "b", 1, chain=chain), _package(tmp_path, "c", 2)]
    out = average_packages(paths, tmp_path / "avg", "avg", chain_from="b")
    pkg = read_package(out)
    w = [_weights(p) for p in paths]
    got = _weights(out)
    assert set(got) == set(w[0])
    for k in got:
        np.testing.assert_allclose(got[k], (w[0][k] + w[1][k] + w[2][k]) / 3, rtol=1e-6, atol=1e-7)
    assert not np.allclose(got["tail.weight"], w[0]["tail.weight"])  # it is not a copy of one ingredient
    card = pkg.card
    assert card["sha256"] == sha256_file(out / "model.safetensors")
    assert [i["name"] for i in card["recipe"]["ingredients"]] == ["a", "b", "c"]
    assert card["recipe"]["ingredients"][1]["sha256"] == read_package(paths[1]).sha256
    assert card["metrics"] == {}  # the ingredients' figures are not the average's
    assert card["chain"]["nlm_blend"] == {"noise_only": 0.3} and card["chain"]["inherited_from"] == "b"
    assert "validation" not in card["chain"]
    assert list(tmp_path.glob("*avg*")) == [out] and not list(tmp_path.glob(".ctnormalize-staging-*"))  # no staging left


def test_average_refuses_what_cannot_be_averaged(tmp_path):
    from CTNormalizeLib.errors import BadInputError
    from CTNormalizeLib.train.weight_average import average_packages

    a, b = _package(tmp_path, "a", 0), _package(tmp_path, "b", 1)
    other = _package(tmp_path, "wide", 2, arch={**ARCH, "params": {**ARCH["params"], "width": 12}})
    with pytest.raises(BadInputError, match="another architecture"):
        average_packages([a, other], tmp_path / "x", "x")
    with pytest.raises(BadInputError, match="at least two"):
        average_packages([a], tmp_path / "x", "x")
    with pytest.raises(BadInputError, match="twice"):
        average_packages([a, a], tmp_path / "x", "x")
    with pytest.raises(BadInputError, match="exists"):
        average_packages([a, b], b, "x")  # never over an input (or any existing folder)
    with pytest.raises(BadInputError, match="not one of"):
        average_packages([a, b], tmp_path / "x", "x", chain_from="c")
    with pytest.raises(BadInputError, match="lies inside the input folder"):
        average_packages([a, b], a / "sub", "x")  # never into an input package
    assert sorted(f.name for f in a.iterdir()) == ["card.json", "model.safetensors"]
    with pytest.raises(BadInputError, match="name"):
        average_packages([a, b], tmp_path / "x", "")
    bad = json.loads((b / "card.json").read_text())
    bad["sha256"] = "0" * 64
    (b / "card.json").write_text(json.dumps(bad))
    with pytest.raises(BadInputError, match="sha256"):
        average_packages([a, b], tmp_path / "x", "x")
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x*"))


def test_average_weights_script(tmp_path):
    a, b = _package(tmp_path, "a", 0), _package(tmp_path, "b", 1)
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "average_weights.py"), str(a), str(b),
                        "-o", str(tmp_path / "ab"), "--name", "ab"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    card = json.loads((tmp_path / "ab" / "card.json").read_text())
    assert card["recipe"]["command"] == "scripts/average_weights.py a b -o OUT --name ab"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "average_weights.py"), str(a), str(b),
                        "-o", str(tmp_path / "ab"), "--name", "ab"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "exists" in r.stderr and "Traceback" not in r.stderr
    (b / "model.safetensors").unlink()  # a broken input package: one sentence, no traceback
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "average_weights.py"), str(a), str(b),
                        "-o", str(tmp_path / "ab2"), "--name", "ab2"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "model.safetensors" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "ab2").exists()
