"""``ctnormalize info`` and ``ctnormalize protocols`` through a real subprocess: output, JSON, exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_io import write_dicom_series

REPO = Path(__file__).resolve().parents[2]


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "CTNormalizeLib", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def test_info_lung1_text(lung1_path):
    r = cli("info", lung1_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "512 x 512 x 48" in out and "0.5703 x 0.5703 x 5 mm" in out
    assert "Validation: ok" in out
    assert "thickness" in out and "no SliceThickness tag" in out
    assert "noise" in out and "muscle" in out and " HU in soft tissue" in out
    protocol_line = next(line for line in out.splitlines() if line.startswith("Protocol:"))
    assert "dose=" not in protocol_line  # no absolute dose read from the noise
    assert "of its dose" in out  # the noise relative to the target protocol instead


def test_info_lung1_json(lung1_path):
    r = cli("info", lung1_path, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)  # stdout is exactly one JSON document
    assert info["geometry"]["size_xyz"] == [512, 512, 48]
    assert info["geometry"]["spacing_xyz_mm"][2] == pytest.approx(5.0)
    assert info["validation"] == {"ok": True}
    assert info["hu"]["p1"] < -900
    p = info["protocol"]
    assert p["thickness"] == 5.0 and p["sources"]["thickness"]["source"] == "image"
    # lung1 is a routine clinical scan: no absolute dose (it used to read "dose=4", clipped);
    # its noise in HU, and relative to the target, within a plausible clinical range
    assert p["dose"] is None and p["sources"]["dose"]["source"] == "unknown"
    n = info["noise"]
    assert 4.0 < n["noise_hu"] < 12.0 and n["by_region"]["muscle"] > 0
    assert 0.05 < n["noise_equivalent_dose"] < 3.0
    sig = info["signature"]
    assert sig["kernel"] in ("smooth", "standard") and sig["sources"]["kernel"]["source"] == "image"
    assert sig["details"]["edge"]["mtf50"] == pytest.approx(sig["transfer"]["mtf50"], rel=0.3)


def test_info_ct_small_prints_tags_then_exits_2(ct_small_path):
    r = cli("info", ct_small_path)
    assert r.returncode == 2
    assert "STANDARD" in r.stdout and "GE MEDICAL SYSTEMS" in r.stdout and "170" in r.stdout
    assert "error [BAD_INPUT]" in r.stderr and "got 1 slice" in r.stderr
    r = cli("info", ct_small_path, "--json")
    assert r.returncode == 2
    info = json.loads(r.stdout)
    assert info["validation"]["code"] == "BAD_INPUT"
    assert info["protocol"]["kernel"] == "standard" and info["protocol"]["mas"] == 170
    assert info["tags"]["ConvolutionKernel"] == "STANDARD"


def test_info_brain1_not_ct(brain1_path):
    r = cli("info", brain1_path)
    assert r.returncode == 2
    assert "error [NOT_CT]" in r.stderr and "-1000 HU" in r.stderr


def test_info_missing_file(tmp_path):
    r = cli("info", tmp_path / "nope.nrrd")
    assert r.returncode == 2 and r.stdout == ""
    assert "error [BAD_INPUT]" in r.stderr and "nope.nrrd" in r.stderr
    assert "Traceback" not in r.stderr


def test_info_dicom_series_selection(tmp_path):
    big, _ = write_dicom_series(tmp_path / "d", n_slices=5, seed=1, tags={"ConvolutionKernel": "B70f"})
    small, _ = write_dicom_series(tmp_path / "d", n_slices=3, seed=2, tags={"ConvolutionKernel": "B30f"})
    r = cli("info", tmp_path / "d", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["tags"]["SeriesInstanceUID"] == big and info["protocol"]["kernel"] == "very-sharp"
    assert [w["code"] for w in info["warnings"]] == ["SERIES_CHOSEN"]
    assert {s["uid"] for s in info["series"]} == {big, small}
    r = cli("info", tmp_path / "d", "--series-uid", small)
    assert r.returncode == 0, r.stderr
    assert "B30f" in r.stdout and "standard" in r.stdout
    r = cli("info", tmp_path / "d", "--series-uid", "9.9.9")
    assert r.returncode == 2 and "9.9.9" in r.stderr and "5 slices" in r.stderr and "3 slices" in r.stderr


def test_info_mr_series(tmp_path):
    write_dicom_series(tmp_path / "mr", n_slices=3, modality="MR")
    r = cli("info", tmp_path / "mr")
    assert r.returncode == 2 and "error [NOT_CT]" in r.stderr and "'MR'" in r.stderr


def test_protocols_text_and_json():
    r = cli("protocols")
    assert r.returncode == 0, r.stderr
    for word in ("smooth", "standard", "sharp", "very-sharp", "MTF50", "emphysema-reference", "B70f", "FC52",
                 "STANDARD"):
        assert word in r.stdout
    r = cli("protocols", "--json")
    assert r.returncode == 0
    info = json.loads(r.stdout)
    classes = info["kernel_classes"]
    assert [c["name"] for c in classes] == ["smooth", "standard", "sharp", "very-sharp"]
    m = [c["mtf50_cycles_per_mm"] for c in classes]
    assert m == sorted(m)
    assert "LUNG" in classes[2]["vendor_names"] and "B70f" in classes[3]["siemens_examples"]
    assert any(p["name"] == "emphysema-reference" and p["spec"].startswith("kernel=smooth")
               for p in info["presets"])


def test_info_names_a_normalized_output(lung1_path, tmp_path):
    """An output of ``normalize`` carries its provenance in the header; ``info`` shows it, with the warning
    that what it measures describes the output's pixels, not the requested target."""
    from CTNormalizeLib.io import read_volume, write_volume

    vol = read_volume(lung1_path)
    crop = vol.with_array(vol.hu[:, 150:300, 150:300])
    crop.meta["ctnormalize"] = "classical kernel=smooth,thickness=5 -> kernel=standard,thickness=1"
    crop.meta["ctnormalize_texture"] = "target"
    out = write_volume(crop, tmp_path / "normalized.nrrd")
    r = cli("info", out)
    assert r.returncode == 0, r.stderr
    assert ("Normalized: by CTNormalize: classical kernel=smooth,thickness=5 -> kernel=standard,thickness=1 "
            "(target texture)") in r.stdout
    assert "measured from this output's pixels" in r.stdout
    d = json.loads(cli("info", out, "--json").stdout)
    assert d["normalized_by"].endswith("-> kernel=standard,thickness=1") and d["normalized_texture"] == "target"
    assert json.loads(cli("info", lung1_path, "--json").stdout)["normalized_by"] is None
