"""Start-up and devices: a command imports only what it needs; a missing device is a clear BAD_INPUT."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from CTNormalizeLib.errors import BadInputError

sys.path.insert(0, str(Path(__file__).parent))
from test_fast_path import chest  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import atexit, os, sys
from CTNormalizeLib.cli.main import main
heavy = ("torch", "monai", "SimpleITK", "radiomics", "finufft")
atexit.register(lambda: os.write(2, ("\\nLOADED " + json.dumps(sorted(m for m in heavy if m in sys.modules)) + "\\n").encode()))
import json
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def small_scan(tmp_path_factory):
    from CTNormalizeLib.io import write_volume

    p = tmp_path_factory.mktemp("scan") / "chest.nrrd"
    write_volume(chest(nz=8, n=96), p)
    return p


def _run(args, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", PROBE] + args, capture_output=True, text=True, env=env, cwd=tmp_path)
    loaded = json.loads(p.stderr.rsplit("LOADED ", 1)[1].splitlines()[0])
    return p, loaded


def _normalize(scan, out, method, *extra):
    return ["normalize", str(scan), "-o", str(out), "--target", "emphysema-reference",
            "--source", "kernel=sharp,dose=0.25,thickness=2", "--method", method, "--progress", "json", *extra]


def test_classical_run_never_imports_torch(small_scan, tmp_path):
    p, loaded = _run(_normalize(small_scan, tmp_path / "c.nrrd", "classical"), tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "torch" not in loaded and "monai" not in loaded


def test_model_run_imports_torch_but_not_monai(small_scan, tmp_path):
    p, loaded = _run(_normalize(small_scan, tmp_path / "m.nrrd", "ctn-conditioned-v2"), tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "torch" in loaded and "monai" not in loaded  # whole-slice inference: no sliding windows


def test_a_device_the_classical_chain_does_not_use_is_a_warning_not_a_crash(small_scan, tmp_path):
    p, _ = _run(_normalize(small_scan, tmp_path / "c.nrrd", "classical", "--device", "cuda"), tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    assert "DEVICE_NOT_USED" in json.dumps(events) and (tmp_path / "c.nrrd").exists()


@pytest.mark.parametrize("device", ["cuda", "gpu", "cuda:1", "mps", "tpu"])
def test_missing_device_is_bad_input(small_scan, tmp_path, device):
    import torch

    if device != "tpu" and (torch.cuda.is_available() or torch.backends.mps.is_available()):
        pytest.skip("a GPU is present")
    p, _ = _run(_normalize(small_scan, tmp_path / "d.nrrd", "ctn-conditioned-v2", "--device", device), tmp_path)
    assert p.returncode == 2
    err = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")][-1]
    assert err["event"] == "error" and err["code"] == "BAD_INPUT"
    assert ("PyTorch sees: cpu" in err["message"]) or ("Unknown device" in err["message"])
    assert not (tmp_path / "d.nrrd").exists()


def test_device_names_resolve_against_what_torch_sees(monkeypatch):
    from CTNormalizeLib.inference import device

    monkeypatch.setattr(device, "available_devices", lambda: ["cpu", "cuda:0"])
    assert device.resolve_device("auto") == "cuda:0"
    assert device.resolve_device("GPU") == "cuda:0" and device.resolve_device("cuda") == "cuda:0"
    assert device.resolve_device("cpu") == "cpu"
    with pytest.raises(BadInputError, match="PyTorch sees: cpu, cuda:0"):
        device.resolve_device("cuda:1")
    with pytest.raises(BadInputError, match="PyTorch sees"):
        device.resolve_device("mps")
    monkeypatch.setattr(device, "available_devices", lambda: ["cpu"])
    assert device.resolve_device("auto") == "cpu"


@pytest.mark.slow
def test_speed_benchmark_quick_run_writes_its_json(tmp_path):
    """benchmarks/speed.py end to end on a small crop: every measurement present, no errors."""
    out = tmp_path / "speed.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick", "--skip", "s0,v3",
                        "--out", str(out)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["cli"]["exit_code"] == 0 and r["cli"]["output_shape"] == [40, 128, 128]
    assert set(r["cli"]["stages"]) >= {"read_s", "plan_s", "normalize_s", "write_s", "inference_s"}
    mem = r["memory"]["same_grid"]
    assert mem["peak_rss_gb"] > 0 and mem["cpu_s"] > 0 and "error" not in mem
    q = mem["qc_full_vs_subsample"]
    assert q["all_slices"]["slices_used"] == 40
    assert r["precision"]["cpu_fp32"]["max_hu"] < 0.01
